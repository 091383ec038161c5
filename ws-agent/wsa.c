/* placeholder */
#include "cx.h"
int wsa_placeholder(void);
int wsa_placeholder(void) { return 0; }
