// SPDX-License-Identifier: BSD-3-Clause
#include "provider_common.hpp"

#include <cerrno>
#include <cstdlib>

namespace ipoib::hca::common {

bool option_uint(const ProviderOptions &opts, const char *key, std::uint32_t lo, std::uint32_t hi,
                 std::uint32_t def, std::uint32_t *out, std::string *err) {
    const std::string *v = opts.find(key);
    if (!v) {
        *out = def;
        return true;
    }
    char *end = nullptr;
    errno = 0;
    const unsigned long n = std::strtoul(v->c_str(), &end, 10);
    if (*end || errno || v->front() == '-' || n < lo || n > hi) {
        *err = "option " + std::string(key) + "=" + *v + ": expected " + std::to_string(lo) + ".." +
               std::to_string(hi);
        return false;
    }
    *out = static_cast<std::uint32_t>(n);
    return true;
}

} // namespace ipoib::hca::common
