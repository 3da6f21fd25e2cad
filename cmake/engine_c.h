/* Installed as <xlmr/engine_c.h>: the C API of xlmr-engine (see engine/engine_c.h). */
#ifndef XLMR_INSTALLED_ENGINE_C_H
#define XLMR_INSTALLED_ENGINE_C_H
#include "engine/engine_c.h"
#endif
