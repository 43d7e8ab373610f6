// SPDX-License-Identifier: BSD-3-Clause
// Receive memory lent to the application that may outlive its port's
// release (ipoib_rxbuf.hpp's pools, ipoib_cm.hpp's connected-mode stores):
// freed at once if the application holds none of its buffers, else kept,
// with a reference on its HCA (the memory is the HCA's), until the
// application has freed them all, and freed by a later release. T has
// `Hca *hca` and `std::atomic<std::int64_t> lent` (buffers held).
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <vector>

#include "ipoib_control.hpp"

namespace ipoib::pmd {

template <class T, void (*Destroy)(T *) noexcept>
class RetiredList {
  public:
    // Release x: 0 if it was freed now, else how many of its buffers the
    // application still holds (x kept until it has freed them).
    std::int64_t release(T *x) noexcept {
        sweep();
        if (!x)
            return 0;
        const std::int64_t held = x->lent.load(std::memory_order_acquire);
        if (held == 0) {
            Destroy(x);
            return 0;
        }
        ++x->hca->refs;
        std::lock_guard<std::mutex> g(mu_);
        list_.push_back(x);
        return held;
    }

    // Free the kept ones the application is done with.
    void sweep() noexcept {
        std::vector<T *> done;
        {
            std::lock_guard<std::mutex> g(mu_);
            for (auto it = list_.begin(); it != list_.end();)
                if ((*it)->lent.load(std::memory_order_acquire) == 0) {
                    done.push_back(*it);
                    it = list_.erase(it);
                } else {
                    ++it;
                }
        }
        for (T *x : done) {
            Hca *h = x->hca;
            Destroy(x);
            hca_put(h);
        }
    }

  private:
    std::mutex mu_;
    std::vector<T *> list_;
};

} // namespace ipoib::pmd
