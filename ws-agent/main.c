/* placeholder: replaced by the daemon entry point */
int main(void);
int main(void) { return 1; }
