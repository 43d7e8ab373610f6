// SPDX-License-Identifier: BSD-3-Clause
// The built-in providers: one line each in IPOIB_HCA_BUILTIN_PROVIDERS, and
// one IPOIB_HCA_PROVIDER(...) line in the provider's own source file.
//
// Why a table and not self-registering objects: lib/hca is a static archive.
// A registration object in an .o that nothing references is left out by the
// linker, and a registration made by a C++ constructor would not exist yet
// when another translation unit's constructor (a DPDK RTE_INIT) opens a
// device. The table below refers to every provider object, which pulls its
// .o into the link, and both the objects and the table are constant-
// initialised (constinit): there from the first instruction of the program.
#pragma once

#include "ipoib/hca/provider.hpp"

// X(name): the provider object ipoib::hca::builtin::name, whose
// Provider::name is "name". Keep sorted.
#define IPOIB_HCA_BUILTIN_PROVIDERS(X) \
    X(inproc)                          \
    X(soft)                            \
    X(verbs)                           \
    X(xdp)

namespace ipoib::hca::builtin {
#define IPOIB_HCA_DECLARE_BUILTIN(name) extern const Provider name;
IPOIB_HCA_BUILTIN_PROVIDERS(IPOIB_HCA_DECLARE_BUILTIN)
#undef IPOIB_HCA_DECLARE_BUILTIN
} // namespace ipoib::hca::builtin

// Define a built-in provider; use once, at global scope, in the provider's
// source file. name: an identifier, also the provider's name string.
// options: a std::span-convertible constant array of ProviderOption (or
// std::span<const ProviderOption>{} for none). open: the open function, fully
// qualified.
#define IPOIB_HCA_PROVIDER(name, summary, options, open)                       \
    namespace ipoib::hca::builtin {                                            \
    constinit const Provider name{#name, summary, std::span<const ProviderOption>(options), open}; \
    }
