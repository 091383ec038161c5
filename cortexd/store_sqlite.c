/* placeholder */
#include "store.h"
