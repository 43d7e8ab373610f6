// SPDX-License-Identifier: BSD-3-Clause
// The provider registry and open_device's option checks (no device is
// opened: every case fails before a provider touches hardware or a fabric).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <string>

#include "ipoib/hca/hca.hpp"
#include "ipoib/hca/provider.hpp"

using namespace ipoib::hca;

namespace {

bool contains(const std::string &s, const std::string &what) { return s.find(what) != std::string::npos; }

// A provider of the test's own, which opens nothing.
std::unique_ptr<Context> open_test(const std::string &device, const ProviderOptions &opts, std::string *err) {
    *err = "zz-test provider: no device " + device + " (flavour " + opts.get("flavour", "none") + ")";
    return nullptr;
}
constexpr ProviderOption kTestOptions[] = {{"flavour", "a test option"}};
constexpr Provider kTest{"zz-test", "a provider registered by the test", kTestOptions, open_test};

} // namespace

TEST_CASE("registry: the built-in providers are found by name") {
    for (const char *n : {"soft", "verbs", "inproc"}) {
        const Provider *p = find_provider(n);
        REQUIRE(p);
        CHECK(std::strcmp(p->name, n) == 0);
        CHECK(p->open != nullptr);
        CHECK(std::strlen(p->summary) > 0);
    }
    CHECK(find_provider("nope") == nullptr);
    CHECK(find_provider("") == nullptr);
    const Provider *soft = find_provider("soft");
    std::string keys;
    for (const ProviderOption &o : soft->options)
        keys += std::string(o.key) + " ";
    CHECK(keys == "fabric capture poll_ms ");
    CHECK(find_provider("verbs")->options.empty());
    auto all = providers();
    CHECK(std::is_sorted(all.begin(), all.end(),
                         [](const Provider *a, const Provider *b) { return std::strcmp(a->name, b->name) < 0; }));
}

TEST_CASE("registry: run-time registration, once per name") {
    static const bool first = register_provider(&kTest);  // this test case may run once per process only
    CHECK(first);
    CHECK(find_provider("zz-test") == &kTest);
    CHECK(!register_provider(&kTest));
    static constexpr Provider dup{"soft", "another soft", {}, open_test};
    CHECK(!register_provider(&dup));  // a built-in name
    CHECK(find_provider("soft") != &dup);
    CHECK(!register_provider(nullptr));
    auto all = providers();
    CHECK(all.back() == &kTest);
    auto o = open_device("zz-test", "zz-dev", "flavour=mint");
    CHECK(!o.ctx);
    CHECK(o.error == "zz-test provider: no device zz-dev (flavour mint)");
    CHECK(contains(open_device("soft", "", "flavour=x").error, "belongs to the zz-test provider"));
}

TEST_CASE("open_device: unknown provider lists the registered names") {
    const auto o = open_device("bogus", "", "");
    CHECK(!o.ctx);
    CHECK(contains(o.error, "unknown HCA provider 'bogus'"));
    CHECK(contains(o.error, "inproc, soft, verbs"));
}

TEST_CASE("open_device: options must be key=value") {
    CHECK(open_device("soft", "", "fabric").error == "option 'fabric': expected key=value");
    CHECK(open_device("soft", "", "fabric=").error == "option 'fabric=': expected key=value");
}

TEST_CASE("open_device: an unknown option lists the provider's keys") {
    const auto o = open_device("soft", "", "bogus=1");
    CHECK(!o.ctx);
    CHECK(o.error == "soft provider: unknown option 'bogus' (known: fabric, capture, poll_ms)");
    CHECK(open_device("inproc", "x", "bogus=1").error ==
          "inproc provider: unknown option 'bogus' (known: link, lid, mtu, pkeys)");
    CHECK(open_device("verbs", "", "bogus=1").error == "verbs provider: unknown option 'bogus' (it takes none)");
}

TEST_CASE("open_device: fault injection is not a production option") {
    const auto o = open_device("soft", "", "fault=stall_after_claim");
    CHECK(!o.ctx);
    CHECK(contains(o.error, "soft provider: unknown option 'fault'"));
}

TEST_CASE("open_device: a key of another provider says whose it is") {
    CHECK(open_device("verbs", "", "capture=/tmp/x.pcap").error ==
          "verbs provider: option capture belongs to the soft provider");
    CHECK(open_device("verbs", "", "fabric=f").error == "verbs provider: option fabric belongs to the soft provider");
    CHECK(open_device("soft", "", "link=ib").error == "soft provider: option link belongs to the inproc provider");
}

TEST_CASE("open_device: option values are checked by the provider") {
    CHECK(open_device("soft", "", "fabric=f,poll_ms=0").error == "option poll_ms=0: expected 1..60000");
    CHECK(contains(open_device("soft", "", "fabric=a/b").error, "fabric name 'a/b' may only hold"));
    CHECK(contains(open_device("inproc", "x", "link=fddi").error, "link=fddi: expected ib or eth"));
    CHECK(contains(open_device("inproc", "x", "pkeys=0xffff:zz").error, "pkeys=0xffff:zz"));
}
