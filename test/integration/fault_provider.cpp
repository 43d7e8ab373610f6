// SPDX-License-Identifier: BSD-3-Clause
// The "fault" provider: opens the device through the soft provider, with the
// soft provider's options, then arms the soft HCA's test hooks through its
// test-only header. The production soft provider has none of these options.
#include "fault_provider.hpp"

#include <cstdlib>
#include <string>
#include <vector>

#include "ipoib/hca/provider.hpp"
#include "soft/soft_testing.hpp"

namespace ipoib::test {

namespace {

std::vector<hca::ProviderOption> g_options;  // the soft provider's, plus ours

bool number(const hca::ProviderOptions &opts, const char *key, std::uint32_t *out, std::string *err) {
    const std::string v = opts.get(key);
    if (v.empty())
        return true;
    char *end = nullptr;
    const unsigned long n = std::strtoul(v.c_str(), &end, 10);
    if (*end || n > 3600000) {
        *err = "fault provider: option " + std::string(key) + "=" + v + ": expected milliseconds";
        return false;
    }
    *out = static_cast<std::uint32_t>(n);
    return true;
}

std::unique_ptr<hca::Context> open_fault(const std::string &device, const hca::ProviderOptions &opts,
                                         std::string *err) {
    const hca::Provider *soft = hca::find_provider("soft");
    hca::ProviderOptions rest = opts;
    const std::string fault = rest.get("fault");
    std::uint32_t fault_ms = 0, stall_ms = 0;
    if (!number(opts, "fault_ms", &fault_ms, err) || !number(opts, "stall_ms", &stall_ms, err))
        return nullptr;
    for (const char *k : {"fault", "fault_ms", "stall_ms"})
        rest.erase(k);
    if (!fault.empty() && fault != "stall_after_claim" && fault != "slow_attach") {
        *err = "fault provider: option fault=" + fault + ": expected stall_after_claim or slow_attach";
        return nullptr;
    }
    if (fault == "slow_attach")
        hca::soft::set_attach_pause_ms(fault_ms ? fault_ms : 1000);
    auto ctx = soft->open(device, rest, err);
    if (!ctx)
        return nullptr;
    if ((fault == "stall_after_claim" && !hca::soft::arm_stall_after_claim(*ctx, fault_ms)) ||
        (stall_ms && !hca::soft::set_stall_ms(*ctx, stall_ms))) {
        *err = "fault provider: the soft provider did not give a soft-HCA context";
        return nullptr;
    }
    return ctx;
}

hca::Provider g_fault{"fault", "tests only: the soft provider with fault injection and test hooks", {},
                      open_fault};

} // namespace

bool register_fault_provider() {
    const hca::Provider *soft = hca::find_provider("soft");
    if (!soft)
        return false;
    g_options.assign(soft->options.begin(), soft->options.end());
    g_options.push_back({"fault", "stall_after_claim: a send claims the receiver's slot, then stalls (for good, or "
                                  "fault_ms); slow_attach: attaching pauses fault_ms (default 1000) between claiming "
                                  "a process slot and publishing it"});
    g_options.push_back({"fault_ms", "milliseconds of the fault (0: stall for good)"});
    g_options.push_back({"stall_ms", "how long a slot claimed by a live sender may block a receive queue"});
    g_fault.options = g_options;
    return hca::register_provider(&g_fault);
}

} // namespace ipoib::test
