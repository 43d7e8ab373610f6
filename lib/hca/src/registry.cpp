// SPDX-License-Identifier: BSD-3-Clause
// The provider registry: the built-in table and the providers registered at
// run time, all in constant-initialised storage (see builtin_providers.hpp
// for why), and the option list every provider's open receives.
#include <algorithm>
#include <atomic>
#include <cstring>

#include "builtin_providers.hpp"
#include "ipoib/hca/provider.hpp"

namespace ipoib::hca {

namespace {

#define IPOIB_HCA_BUILTIN_ENTRY(name) &builtin::name,
constinit const Provider *const kBuiltin[] = {IPOIB_HCA_BUILTIN_PROVIDERS(IPOIB_HCA_BUILTIN_ENTRY)};
#undef IPOIB_HCA_BUILTIN_ENTRY

// Run-time registrations. Writers serialise on a spinlock (a registration is
// rare); readers are lock-free: a slot is published (release) after its
// provider is complete and never changes afterwards.
constexpr std::size_t kMaxRegistered = 16;
constinit std::atomic<const Provider *> g_registered[kMaxRegistered] = {};
constinit std::atomic_flag g_register_lock = ATOMIC_FLAG_INIT;

const Provider *find_registered(std::string_view name) noexcept {
    for (auto &slot : g_registered) {
        const Provider *p = slot.load(std::memory_order_acquire);
        if (!p)
            break;  // slots fill in order
        if (name == p->name)
            return p;
    }
    return nullptr;
}

} // namespace

bool register_provider(const Provider *p) noexcept {
    if (!p || !p->name || !*p->name || !p->open)
        return false;
    while (g_register_lock.test_and_set(std::memory_order_acquire)) {
    }
    bool ok = false;
    if (!find_provider(p->name)) {
        for (auto &slot : g_registered)
            if (!slot.load(std::memory_order_relaxed)) {
                slot.store(p, std::memory_order_release);
                ok = true;
                break;
            }
    }
    g_register_lock.clear(std::memory_order_release);
    return ok;
}

const Provider *find_provider(std::string_view name) noexcept {
    for (const Provider *p : kBuiltin)
        if (name == p->name)
            return p;
    return find_registered(name);
}

std::vector<const Provider *> providers() {
    std::vector<const Provider *> v(std::begin(kBuiltin), std::end(kBuiltin));
    for (auto &slot : g_registered) {
        const Provider *p = slot.load(std::memory_order_acquire);
        if (!p)
            break;
        v.push_back(p);
    }
    std::sort(v.begin(), v.end(),
              [](const Provider *a, const Provider *b) { return std::strcmp(a->name, b->name) < 0; });
    return v;
}

bool ProviderOptions::parse(std::string_view text, ProviderOptions *out, std::string *err) {
    out->items_.clear();
    std::size_t pos = 0;
    while (pos < text.size()) {
        std::size_t end = text.find(',', pos);
        if (end == std::string_view::npos)
            end = text.size();
        const std::string_view kv = text.substr(pos, end - pos);
        pos = end + 1;
        if (kv.empty())
            continue;
        const std::size_t eq = kv.find('=');
        if (eq == std::string_view::npos || eq + 1 == kv.size()) {
            *err = "option '" + std::string(kv) + "': expected key=value";
            return false;
        }
        out->items_.emplace_back(std::string(kv.substr(0, eq)), std::string(kv.substr(eq + 1)));
    }
    return true;
}

const std::string *ProviderOptions::find(std::string_view key) const noexcept {
    for (auto it = items_.rbegin(); it != items_.rend(); ++it)
        if (it->first == key)
            return &it->second;
    return nullptr;
}

std::string ProviderOptions::get(std::string_view key, std::string_view def) const {
    const std::string *v = find(key);
    return v ? *v : std::string(def);
}

void ProviderOptions::set(std::string_view key, std::string_view value) {
    erase(key);
    items_.emplace_back(std::string(key), std::string(value));
}

void ProviderOptions::erase(std::string_view key) noexcept {
    std::erase_if(items_, [&](const auto &kv) { return kv.first == key; });
}

} // namespace ipoib::hca
