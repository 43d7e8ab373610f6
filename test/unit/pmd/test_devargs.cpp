// SPDX-License-Identifier: BSD-3-Clause
// The devargs table: every argument, every bad value, and the table against
// the pmdinfo string and doc/net_ipoib.md.
#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <sstream>

#include "ipoib_devargs.hpp"

using namespace ipoib;
using namespace ipoib::pmd;

namespace {

Config parse_ok(const std::string &args) {
    Config c;
    std::string err;
    INFO(args);
    REQUIRE(parse_devargs(args.c_str(), &c, &err));
    CHECK(err.empty());
    return c;
}

std::string parse_err(const std::string &args) {
    Config c;
    std::string err;
    INFO(args);
    REQUIRE_FALSE(parse_devargs(args.c_str(), &c, &err));
    return err;
}

} // namespace

TEST_CASE("devargs: defaults without arguments") {
    const Config c = parse_ok("");
    CHECK(c.provider == "soft");
    CHECK(c.port == 1);
    CHECK(c.pkey == 0);
    CHECK(c.l2 == L2Mode::eth);
    CHECK(c.rxq_size == kQueueDepthDefault);
    CHECK(c.txq_size == kQueueDepthDefault);
    CHECK(c.neigh_timeout_s == kNeighTimeoutDefaultS);
    CHECK(c.gid_index == -1);
    CHECK(c.bcast_qkey == 0x0b1b);
    CHECK(c.bcast_mtu == 0);
    CHECK_FALSE(c.allmulti);
    CHECK(c.provider_options.empty());
    CHECK(c.neighs.empty());
}

TEST_CASE("devargs: every argument parsed into the config") {
    const Config c = parse_ok(
        "provider=verbs,dev=mlx5_0,port=2,pkey=0x8001,mode=datagram,l2=ipoib,rxq_size=64,txq_size=1024,"
        "neigh=02:00:00:00:00:05/00:00:01:80:fe:80:00:00:00:00:00:00:00:02:c9:03:00:0a:bc:de,"
        "neigh=02:00:00:00:00:06/00:ff:ff:ff:ff:12:40:1b:ff:ff:00:00:00:00:00:00:ff:ff:ff:ff,"
        "capture=/tmp/x.pcap,fabric=sim1,allmulti=1,neigh_timeout=60,gid_index=3,bcast_qkey=0x1234,bcast_mtu=1024");
    CHECK(c.provider == "verbs");
    CHECK(c.device == "mlx5_0");
    CHECK(c.port == 2);
    CHECK(c.pkey == 0x8001);
    CHECK(c.l2 == L2Mode::ipoib);
    CHECK(c.rxq_size == 64);
    CHECK(c.txq_size == 1024);
    REQUIRE(c.neighs.size() == 2);
    CHECK(c.neighs[0].mac == wire::Mac{{0x02, 0, 0, 0, 0, 5}});
    CHECK(c.neighs[0].hw.qpn() == 0x000180);
    CHECK(c.neighs[0].hw.gid().raw[15] == 0xde);
    CHECK(c.neighs[1].hw.qpn() == 0xffffff);
    // Provider options are passed on in the order given.
    CHECK(c.provider_options == "capture=/tmp/x.pcap,fabric=sim1");
    CHECK(c.allmulti);
    CHECK(c.neigh_timeout_s == 60);
    CHECK(c.gid_index == 3);
    CHECK(c.bcast_qkey == 0x1234);
    CHECK(c.bcast_mtu == 1024);
    CHECK(!c.connected);
}

TEST_CASE("devargs: connected mode and its limits") {
    const Config c = parse_ok("mode=connected,max_conns=8,cm_idle=30");
    CHECK(c.connected);
    CHECK(c.max_conns == 8);
    CHECK(c.cm_idle_s == 30);
    const Config d = parse_ok("mode=datagram");
    CHECK(!d.connected);
    CHECK(d.max_conns == kMaxConnsDefault);
    CHECK(d.cm_idle_s == kCmIdleDefaultS);
}

TEST_CASE("devargs: every bad value is refused by name") {
    const std::pair<const char *, const char *> bad[] = {
        {"provider=ib", "expected an HCA provider: inproc, soft, verbs"},
        {"provider=", "expected an HCA provider: inproc, soft, verbs"},
        {"dev=0123456789012345678901234567890123456789012345678901234567890123", "expected a device name"},
        {"port=0", "expected port 1 or 2"},
        {"port=3", "expected port 1 or 2"},
        {"port=-1", "expected port 1 or 2"},
        {"port=1x", "expected port 1 or 2"},
        {"pkey=0x8000", "expected a P_Key"},
        {"pkey=0", "expected a P_Key"},
        {"pkey=0x10000", "expected a P_Key"},
        {"mode=ud", "expected datagram or connected"},
        {"mode=connected,l2=ipoib", "not available with l2=ipoib"},
        {"max_conns=0", "expected 1-65536"},
        {"max_conns=65537", "expected 1-65536"},
        {"cm_idle=0", "expected 1-86400 (seconds)"},
        {"l2=ppp", "expected eth (Ethernet emulation) or ipoib (native)"},
        {"rxq_size=100", "expected a power of two, 16-1024"},
        {"rxq_size=8", "expected a power of two, 16-1024"},
        {"txq_size=2048", "expected a power of two, 16-1024"},
        {"neigh=02:00:00:00:00:05", "expected MAC/20-byte-IPoIB-address"},
        {"neigh=zz/00:00:01:80", "expected MAC/20-byte-IPoIB-address"},
        {"neigh=02:00:00:00:00:05/00:01", "IPoIB address:"},
        {"capture=", "expected a value without commas"},
        {"allmulti=2", "expected 0 or 1"},
        {"neigh_timeout=0", "expected seconds, 1-86400"},
        {"neigh_timeout=86401", "expected seconds, 1-86400"},
        {"gid_index=256", "expected a GID table index, 0-255"},
        {"bcast_qkey=0x80000001", "expected a Q_Key"},
        {"bcast_qkey=0", "expected a Q_Key"},
        {"bcast_mtu=1500", "expected an IB MTU"},
        {"bcast_mtu=8192", "expected an IB MTU"},
    };
    for (const auto &[arg, why] : bad) {
        const std::string err = parse_err(std::string("port=1,") + arg);
        INFO(arg << " -> " << err);
        const std::string s(arg);
        const std::string key = s.substr(0, s.find('='));
        CHECK(err.rfind("devarg " + key + "=", 0) == 0);  // names the argument and its value
        CHECK(err.find(why) != std::string::npos);
    }
}

TEST_CASE("devargs: an unknown key lists the known ones") {
    const std::string err = parse_err("port=1,bogus=1");
    CHECK(err.find("cannot parse devargs 'port=1,bogus=1'") == 0);
    for (const Devarg &d : devargs())
        CHECK(err.find(d.name) != std::string::npos);
}

TEST_CASE("devargs: the pmdinfo string lists the table") {
    const std::string info = pmdinfo_string();
    REQUIRE(info.rfind("PMD_INFO_STRING= {", 0) == 0);
    CHECK(info.find("\"name\" : \"net_ipoib\"") != std::string::npos);
    CHECK(info.find("\"pci_ids\" : []") != std::string::npos);
    const std::string key = "\"params\" : \"";
    const auto at = info.find(key);
    REQUIRE(at != std::string::npos);
    const auto end = info.find('"', at + key.size());
    std::istringstream params(info.substr(at + key.size(), end - at - key.size()));
    std::vector<std::string> words;
    for (std::string w; params >> w;)
        words.push_back(w);
    // Values may hold spaces ("<pcap file>"): rebuild the expected words the same way.
    std::vector<std::string> want;
    for (const Devarg &d : devargs()) {
        std::istringstream one(std::string(d.name) + "=" + d.values);
        for (std::string w; one >> w;)
            want.push_back(w);
    }
    CHECK(words == want);
}

TEST_CASE("devargs: doc/net_ipoib.md documents every argument as the table does") {
    std::ifstream f(IPOIB_SOURCE_ROOT "/doc/net_ipoib.md");
    REQUIRE(f.good());
    std::set<std::string> rows, documented;
    bool in_section = false;
    for (std::string line; std::getline(f, line);) {
        if (line.rfind("## ", 0) == 0)
            in_section = line == "## Device arguments";
        if (!in_section || line.rfind("| `", 0) != 0)
            continue;
        rows.insert(line);
        documented.insert(line.substr(3, line.find('`', 3) - 3));
    }
    std::set<std::string> names;
    for (const Devarg &d : devargs()) {
        names.insert(d.name);
        const std::string row = std::string("| `") + d.name + "` | " + d.doc_values + " | " + d.doc + " |";
        INFO("doc/net_ipoib.md needs the row:\n" << row);
        CHECK(rows.count(row) == 1);
    }
    CHECK(documented == names);  // and documents nothing the driver does not take
}
