// SPDX-License-Identifier: BSD-3-Clause
// What every provider does the same way, written once. Internal to lib/hca.
#pragma once

#include <cstdint>
#include <string>

#include "ipoib/hca/provider.hpp"

namespace ipoib::hca::common {

// A decimal option value in [lo, hi], def if the option is absent.
// On a bad value: false, *err = "option KEY=VALUE: expected LO..HI".
bool option_uint(const ProviderOptions &opts, const char *key, std::uint32_t lo, std::uint32_t hi,
                 std::uint32_t def, std::uint32_t *out, std::string *err);

} // namespace ipoib::hca::common
