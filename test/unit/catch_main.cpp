// SPDX-License-Identifier: BSD-3-Clause
// Catch2 main shared by the unit-test executables, with a reporter that
// prints one TAP line per test case ("-r tapcases"), so meson and the test
// command's summary count test cases rather than assertions. Failed
// assertions are printed as TAP diagnostics under their test case.
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

namespace {

class TapCasesReporter : public Catch::StreamingReporterBase<TapCasesReporter> {
  public:
    using StreamingReporterBase::StreamingReporterBase;

    static std::string getDescription() { return "TAP, one line per test case"; }

    void assertionStarting(const Catch::AssertionInfo &) override {}

    bool assertionEnded(const Catch::AssertionStats &stats) override {
        const auto &r = stats.assertionResult;
        if (!r.isOk()) {
            auto loc = r.getSourceInfo();
            failures_ << "#   " << loc.file << ":" << loc.line << ": " << r.getExpressionInMacro();
            if (r.hasExpandedExpression())
                failures_ << "  with: " << r.getExpandedExpression();
            if (r.hasMessage())
                failures_ << "  " << r.getMessage();
            for (const auto &m : stats.infoMessages)
                failures_ << "  [" << m.message << "]";
            failures_ << "\n";
        }
        return true;
    }

    void testCaseEnded(const Catch::TestCaseStats &stats) override {
        ++count_;
        const bool ok = stats.totals.assertions.failed == 0;
        stream << (ok ? "ok " : "not ok ") << count_ << " - " << stats.testInfo.name << "\n"
               << failures_.str();
        failures_.str("");
        StreamingReporterBase::testCaseEnded(stats);
    }

    void testRunEnded(const Catch::TestRunStats &stats) override {
        stream << "1.." << count_ << "\n";
        StreamingReporterBase::testRunEnded(stats);
    }

  private:
    std::size_t count_ = 0;
    std::ostringstream failures_;
};

} // namespace

CATCH_REGISTER_REPORTER("tapcases", TapCasesReporter)
