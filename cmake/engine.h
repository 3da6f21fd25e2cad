// Installed as <xlmr/engine.h>: the C++ API of xlmr-engine (see engine/engine.h).
#pragma once
#include "engine/engine.h"
