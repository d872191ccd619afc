#include <doctest/doctest.h>

#include <fstream>

#include "fs/options.h"
#include "tests/support/temp_dir.h"

using namespace tessera;
namespace po = boost::program_options;

namespace {

po::options_description testFlags() {
  po::options_description d("test");
  d.add_options()("listen", po::value<std::string>()->default_value("127.0.0.1:0"), "address")(
      "dir", po::value<std::string>(), "data dir")("count", po::value<int>(), "a number");
  return d;
}

Result<Options> parse(std::vector<const char*> args) {
  args.insert(args.begin(), "prog");
  return parseOptions(int(args.size()), args.data(), testFlags(), "usage: prog");
}

}  // namespace

TEST_CASE("address: host:port forms parse — bad ones say what is wrong") {
  auto a = Address::parse("127.0.0.1:7420");
  REQUIRE(a.ok());
  CHECK(a->host == "127.0.0.1");
  CHECK(a->port == 7420);
  auto v6 = Address::parse("[::1]:9");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  CHECK(v6->toString() == "[::1]:9");
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", ":80", "host:65536", "host:-1",
                          "host:12a", "[::1]9", "a b:1"}) {
    CAPTURE(bad);
    auto r = Address::parse(bad);
    REQUIRE(!r.ok());
    CHECK(r.error().code == Errc::kInvalid);
  }
}

TEST_CASE("address list: one or more HOST:PORT, comma separated — bad ones name the entry") {
  auto one = parseAddressList("127.0.0.1:7420");
  REQUIRE(one.ok());
  REQUIRE(one->size() == 1);
  CHECK((*one)[0].port == 7420);
  auto three = parseAddressList("a:1, b:2 ,[::1]:3");
  REQUIRE(three.ok());
  REQUIRE(three->size() == 3);
  CHECK((*three)[1].host == "b");
  CHECK(joinAddresses(*three) == "a:1,b:2,[::1]:3");
  struct Bad {
    const char* text;
    const char* says;
  };
  for (auto [text, says] : {Bad{"", "no address"}, Bad{" ", "no address"},
                            Bad{"a:1,", "empty entry"}, Bad{"a:1,,b:2", "empty entry"},
                            Bad{"a:1,b", "bad address 'b'"}, Bad{"a:0", "port 0"},
                            Bad{"a:1,a:1", "a:1 is given twice"}}) {
    CAPTURE(text);
    auto r = parseAddressList(text);
    REQUIRE(!r.ok());
    CHECK(r.code() == Errc::kInvalid);
    CHECK(r.error().detail.find(says) != std::string::npos);
  }
}

TEST_CASE("sizes and durations: units, and garbage refused") {
  CHECK(*parseSize("4096") == 4096);
  CHECK(*parseSize("64K") == 65536);
  CHECK(*parseSize("64KiB") == 65536);
  CHECK(*parseSize("10M") == 10ull << 20);
  CHECK(*parseSize("2g") == 2ull << 30);
  CHECK(*parseDurationMs("250ms") == 250);
  CHECK(*parseDurationMs("10s") == 10'000);
  CHECK(*parseDurationMs("10") == 10'000);
  CHECK(*parseDurationMs("2m") == 120'000);
  for (const char* bad : {"", "K", "12X", "-5", "1.5G", "99999999999999999999",
                          "20000000000T"}) {
    CAPTURE(bad);
    CHECK(parseSize(bad).code() == Errc::kInvalid);
  }
  for (const char* bad : {"", "s", "5d", "-1s", "99999999999999999999h"}) {
    CAPTURE(bad);
    CHECK(parseDurationMs(bad).code() == Errc::kInvalid);
  }
}

TEST_CASE("flags: unknown flag, missing value and wrong type are errors, not exceptions") {
  CHECK(parse({"--nope"}).code() == Errc::kInvalid);
  CHECK(parse({"--dir"}).code() == Errc::kInvalid);
  CHECK(parse({"--count", "many"}).code() == Errc::kInvalid);
  CHECK(parse({"--dir", "/x", "stray"}).code() == Errc::kInvalid);
  auto ok = parse({"--dir", "/x", "--count", "3"});
  REQUIRE(ok.ok());
  CHECK(ok->values["dir"].as<std::string>() == "/x");
  CHECK(ok->values["listen"].as<std::string>() == "127.0.0.1:0");
}

TEST_CASE("config file: values apply, the command line wins, bad lines name their line") {
  test::TempDir tmp;
  std::string path = tmp / "t.conf";
  std::ofstream(path) << "# a comment\n\ndir = /from/file\ncount = 7\nlisten = 1.2.3.4:5\n";
  auto r = parse({"--config", path.c_str(), "--count", "9"});
  REQUIRE(r.ok());
  CHECK(r->values["dir"].as<std::string>() == "/from/file");
  CHECK(r->values["count"].as<int>() == 9);
  CHECK(r->values["listen"].as<std::string>() == "1.2.3.4:5");

  auto bad = [&](const char* text) {
    std::ofstream(path) << text;
    return parse({"--config", path.c_str()});
  };
  auto noEq = bad("dir = /x\njust words\n");
  REQUIRE(!noEq.ok());
  CHECK(noEq.error().detail.find(":2") != std::string::npos);
  auto unknown = bad("colour = blue\n");
  REQUIRE(!unknown.ok());
  CHECK(unknown.error().detail.find("colour") != std::string::npos);
  CHECK(bad("count = lots\n").code() == Errc::kInvalid);
  CHECK(bad("= 3\n").code() == Errc::kInvalid);
  CHECK(bad("\x01\x02\xff garbage\n").code() == Errc::kInvalid);
  CHECK(parse({"--config", (tmp / "missing.conf").c_str()}).code() == Errc::kInvalid);
}
