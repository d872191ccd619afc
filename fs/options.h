// fs/options.h — command-line flags and config files for every Tessera binary, and the value
// parsers they share. A config file holds the same keys as the long flags, one `key = value` per
// line, `#` comments; a flag on the command line wins over the file. Every bad input becomes a
// one-line Error naming what was wrong; nothing here throws to the caller.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <boost/program_options.hpp>

#include "fs/result.h"

namespace tessera {

struct Address {
  std::string host;
  uint16_t port = 0;

  // "127.0.0.1:7420", "[::1]:7420", "localhost:0". The port is required.
  static Result<Address> parse(std::string_view text);
  std::string toString() const;
};

// "HOST:PORT[,HOST:PORT...]": the servers of one group, such as a cluster's meta servers (one
// address is a list too). kInvalid, naming the bad entry, for an empty list or entry, a
// malformed address, port 0 or an address given twice.
Result<std::vector<Address>> parseAddressList(std::string_view text);
// "a:1,b:2": the inverse, for messages.
std::string joinAddresses(const std::vector<Address>& addresses);

// "4096", "64K", "64KiB", "10M", "2G", "1T" (powers of 1024).
Result<uint64_t> parseSize(std::string_view text);
// "250ms", "10s", "5m", "1h"; a bare number is seconds.
Result<uint64_t> parseDurationMs(std::string_view text);

struct Options {
  boost::program_options::variables_map values;
  bool help = false;  // --help was given; the usage text has been printed
};

// Parses argv against `flags`, adding --help and --config FILE. `usage` heads the --help text.
// kInvalid for an unknown flag, a stray argument, a missing or malformed value, an unreadable
// or malformed config file; the detail names the flag or file and line.
Result<Options> parseOptions(int argc, const char* const* argv,
                             const boost::program_options::options_description& flags,
                             std::string_view usage);

// Parses config file text on its own (what --config reads); `origin` names it in errors.
Result<boost::program_options::variables_map> parseConfigText(
    std::string_view text, std::string_view origin,
    const boost::program_options::options_description& flags);

}  // namespace tessera
