/* cli_exec.h — `cortexctl exec` (exec.c). */
#ifndef CORTEX_CLI_EXEC_H
#define CORTEX_CLI_EXEC_H

/* args: the operands after "exec".  Returns the exit status, or -1 for a
 * usage error (the caller prints the usage). */
int cli_exec(const char *url, const char *token, char **args, int nargs);

#endif
