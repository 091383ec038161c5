/* placeholder */
#include "sandbox.h"
