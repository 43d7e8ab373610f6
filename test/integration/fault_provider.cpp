// SPDX-License-Identifier: BSD-3-Clause
// The "fault" provider: opens the device through the soft provider, with the
// soft provider's options, then arms the soft HCA's fault hook through its
// test-only header. The production soft provider has no fault option.
#include "fault_provider.hpp"

#include <string>
#include <vector>

#include "ipoib/hca/provider.hpp"
#include "soft/soft_testing.hpp"

namespace ipoib::test {

namespace {

std::vector<hca::ProviderOption> g_options;  // the soft provider's, plus "fault"

std::unique_ptr<hca::Context> open_fault(const std::string &device, const hca::ProviderOptions &opts,
                                         std::string *err) {
    const hca::Provider *soft = hca::find_provider("soft");
    hca::ProviderOptions rest = opts;
    const std::string fault = rest.get("fault");
    rest.erase("fault");
    if (!fault.empty() && fault != "stall_after_claim") {
        *err = "fault provider: option fault=" + fault + ": expected stall_after_claim";
        return nullptr;
    }
    auto ctx = soft->open(device, rest, err);
    if (ctx && !fault.empty() && !hca::soft::arm_stall_after_claim(*ctx)) {
        *err = "fault provider: the soft provider did not give a soft-HCA context";
        return nullptr;
    }
    return ctx;
}

hca::Provider g_fault{"fault", "tests only: the soft provider with fault injection (fault=stall_after_claim)", {},
                      open_fault};

} // namespace

bool register_fault_provider() {
    const hca::Provider *soft = hca::find_provider("soft");
    if (!soft)
        return false;
    g_options.assign(soft->options.begin(), soft->options.end());
    g_options.push_back({"fault", "stall_after_claim: a send claims the receiver's slot, then stalls for good"});
    g_fault.options = g_options;
    return hca::register_provider(&g_fault);
}

} // namespace ipoib::test
