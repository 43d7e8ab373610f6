// SPDX-License-Identifier: BSD-3-Clause
// The HCA provider registry: providers are found by name, each with the
// key=value options it accepts, the way rdma-core registers its providers.
//
// open_device(provider, device, options) (hca.hpp) finds the provider here,
// splits the options, refuses keys the provider does not list (naming the
// provider that owns a foreign key), and calls the provider's open.
//
// Built-in providers (soft, verbs, inproc) are constant-initialised objects
// listed in one table inside the library (lib/hca/src/builtin_providers.hpp):
// they exist before any C++ dynamic initialisation runs, so a DPDK RTE_INIT
// constructor may open a device, and they cannot be dropped by the linker
// from the static library because the table refers to each of them.
// register_provider() adds further providers at run time (test providers
// defined by an executable); its storage is constant-initialised too, so it
// may be called from static constructors.
#pragma once

#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ipoib/hca/hca.hpp"

namespace ipoib::hca {

// One option key a provider accepts, with a line of help.
struct ProviderOption {
    const char *key;
    const char *help;
};

// The options given to open_device, split into key/value pairs in the order
// given. Only keys the provider lists reach its open function.
class ProviderOptions {
  public:
    // "key=value[,key=value...]" (empty items are skipped). On an item that is
    // not key=value (or has an empty value): false, *err = "option 'ITEM': expected key=value".
    static bool parse(std::string_view text, ProviderOptions *out, std::string *err);

    // The value of key (the last one if given twice), or nullptr.
    const std::string *find(std::string_view key) const noexcept;
    // The value of key, or def.
    std::string get(std::string_view key, std::string_view def = {}) const;
    void set(std::string_view key, std::string_view value);
    void erase(std::string_view key) noexcept;
    const std::vector<std::pair<std::string, std::string>> &items() const noexcept { return items_; }

  private:
    std::vector<std::pair<std::string, std::string>> items_;
};

struct Provider {
    const char *name;                         // "soft", "verbs", "inproc", ...
    const char *summary;                      // one line, for error messages and docs
    std::span<const ProviderOption> options;  // the key=value options it accepts
    // Open a device. On failure: nullptr and a one-line *err (never empty).
    std::unique_ptr<Context> (*open)(const std::string &device, const ProviderOptions &opts, std::string *err);
};

// Add a provider at run time (tests, examples). The provider object must
// outlive every use of the registry (a static). Returns false, adding
// nothing, if the name is taken or the table of run-time providers (16) is
// full. Safe before main() and from several threads.
bool register_provider(const Provider *p) noexcept;

// The provider of that name (built-in or registered), or nullptr.
const Provider *find_provider(std::string_view name) noexcept;

// Every provider, built-in and registered, sorted by name.
std::vector<const Provider *> providers();

} // namespace ipoib::hca
