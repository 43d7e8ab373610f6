// SPDX-License-Identifier: BSD-3-Clause
// Catch2 main shared by the unit-test executables; the TAP reporter lets
// meson count every test case (run with `-r tap`).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
#include <catch2/catch_reporter_tap.hpp>
