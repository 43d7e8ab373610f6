// SPDX-License-Identifier: BSD-3-Clause
// IPoIB wire formats: one include for all of them.
#pragma once

#include "ipoib/wire/addr_map.hpp"
#include "ipoib/wire/arp.hpp"
#include "ipoib/wire/encap.hpp"
#include "ipoib/wire/hwaddr.hpp"
#include "ipoib/wire/identity.hpp"
#include "ipoib/wire/membership.hpp"
#include "ipoib/wire/mgid.hpp"
#include "ipoib/wire/nd.hpp"
#include "ipoib/wire/types.hpp"
