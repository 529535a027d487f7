/* The one release function for memory the library allocates and hands to its caller. */
#include "internal.h"

#include <stdlib.h>

void ws_free(void *p) { free(p); }
