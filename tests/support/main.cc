// The main of every test binary: doctest's, plus one guard. ctest runs each test case on its
// own, by name (doctest_discover_tests); a name that CMake mangles (a ';' splits it in two)
// would select no test case at all, and doctest calls that a success. Here it is a failure.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>

namespace {

int started = 0;

// Counts the test cases that ran; reports nothing.
struct StartCounter : doctest::IReporter {
  explicit StartCounter(const doctest::ContextOptions&) {}
  void report_query(const doctest::QueryData&) override {}
  void test_run_start() override {}
  void test_run_end(const doctest::TestRunStats&) override {}
  void test_case_start(const doctest::TestCaseData&) override { ++started; }
  void test_case_reenter(const doctest::TestCaseData&) override {}
  void test_case_end(const doctest::CurrentTestCaseStats&) override {}
  void test_case_exception(const doctest::TestCaseException&) override {}
  void subcase_start(const doctest::SubcaseSignature&) override {}
  void subcase_end() override {}
  void log_assert(const doctest::AssertData&) override {}
  void log_message(const doctest::MessageData&) override {}
  void test_case_skipped(const doctest::TestCaseData&) override {}
};

REGISTER_LISTENER("start-counter", 1, StartCounter);

bool startsWith(const char* s, const char* prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

}  // namespace

int main(int argc, char** argv) {
  doctest::Context context(argc, argv);
  int rc = context.run();
  if (context.shouldExit() || rc != 0) return rc;
  bool byName = false;
  for (int i = 1; i < argc; ++i) {
    if (startsWith(argv[i], "--test-case=") || startsWith(argv[i], "-tc=")) byName = true;
    if (startsWith(argv[i], "--list") || startsWith(argv[i], "-l")) return rc;
  }
  if (byName && started == 0) {
    fprintf(stderr, "no test case matches the --test-case filter: nothing ran\n");
    return 1;
  }
  return rc;
}
