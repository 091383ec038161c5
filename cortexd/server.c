/* placeholder */
#include "cx.h"
int cortexd_placeholder(void);
int cortexd_placeholder(void) { return 0; }
