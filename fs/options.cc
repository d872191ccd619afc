#include "fs/options.h"

#include <cctype>
#include <charconv>
#include <fstream>
#include <iostream>
#include <sstream>

namespace po = boost::program_options;

namespace tessera {
namespace {

Error invalid(std::string what) { return Error{Errc::kInvalid, std::move(what)}; }

bool parseUint(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// Splits "123abc" into the number and the unit.
bool splitUnit(std::string_view text, uint64_t& n, std::string_view& unit) {
  text = trim(text);
  size_t i = 0;
  while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) ++i;
  if (!parseUint(text.substr(0, i), n)) return false;
  unit = trim(text.substr(i));
  return true;
}

bool mulOverflows(uint64_t a, uint64_t b, uint64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}

}  // namespace

Result<Address> Address::parse(std::string_view text) {
  std::string_view s = trim(text);
  std::string_view host, port;
  if (!s.empty() && s.front() == '[') {
    auto close = s.find(']');
    if (close == std::string_view::npos || close + 1 >= s.size() || s[close + 1] != ':') {
      return invalid("bad address '" + std::string(text) + "' (expected [v6addr]:port)");
    }
    host = s.substr(1, close - 1);
    port = s.substr(close + 2);
  } else {
    auto colon = s.rfind(':');
    if (colon == std::string_view::npos) {
      return invalid("bad address '" + std::string(text) + "' (expected host:port)");
    }
    host = s.substr(0, colon);
    port = s.substr(colon + 1);
  }
  uint64_t p;
  if (host.empty() || host.find_first_of(" \t/") != std::string_view::npos) {
    return invalid("bad address '" + std::string(text) + "': bad host");
  }
  if (!parseUint(port, p) || p > 65535) {
    return invalid("bad address '" + std::string(text) + "': port must be 0..65535");
  }
  return Address{std::string(host), uint16_t(p)};
}

std::string Address::toString() const {
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + std::to_string(port);
  return host + ":" + std::to_string(port);
}

Result<std::vector<Address>> parseAddressList(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return invalid("bad address list '" + std::string(text) + "': " + why);
  };
  if (trim(text).empty()) return bad("no address (expected HOST:PORT[,HOST:PORT...])");
  std::vector<Address> out;
  size_t start = 0;
  while (true) {
    size_t comma = text.find(',', start);
    std::string_view part = trim(
        text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (part.empty()) return bad("empty entry");
    auto address = Address::parse(part);
    if (!address) return bad(address.error().detail);
    if (address->port == 0) return bad(std::string(part) + ": port 0");
    for (const auto& known : out) {
      if (known.toString() == address->toString()) {
        return bad(address->toString() + " is given twice");
      }
    }
    out.push_back(*address);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

std::string joinAddresses(const std::vector<Address>& addresses) {
  std::string out;
  for (const auto& a : addresses) {
    if (!out.empty()) out += ',';
    out += a.toString();
  }
  return out;
}

Result<uint64_t> parseSize(std::string_view text) {
  uint64_t n;
  std::string_view unit;
  if (!splitUnit(text, n, unit)) return invalid("bad size '" + std::string(text) + "'");
  std::string u;
  for (char c : unit) u += char(std::toupper(static_cast<unsigned char>(c)));
  if (u.size() > 1 && u.back() == 'B') u.pop_back();
  if (u.size() > 1 && u.back() == 'I') u.pop_back();
  uint64_t mul;
  if (u.empty()) mul = 1;
  else if (u == "K") mul = 1ull << 10;
  else if (u == "M") mul = 1ull << 20;
  else if (u == "G") mul = 1ull << 30;
  else if (u == "T") mul = 1ull << 40;
  else return invalid("bad size '" + std::string(text) + "': unknown unit '" + std::string(unit) + "'");
  uint64_t out;
  if (mulOverflows(n, mul, out)) return invalid("size '" + std::string(text) + "' is too large");
  return out;
}

Result<uint64_t> parseDurationMs(std::string_view text) {
  uint64_t n;
  std::string_view unit;
  if (!splitUnit(text, n, unit)) return invalid("bad duration '" + std::string(text) + "'");
  uint64_t mul;
  if (unit == "ms") mul = 1;
  else if (unit.empty() || unit == "s") mul = 1000;
  else if (unit == "m" || unit == "min") mul = 60'000;
  else if (unit == "h") mul = 3'600'000;
  else return invalid("bad duration '" + std::string(text) + "': unknown unit '" + std::string(unit) + "'");
  uint64_t out;
  if (mulOverflows(n, mul, out)) return invalid("duration '" + std::string(text) + "' is too long");
  return out;
}

Result<po::variables_map> parseConfigText(std::string_view text, std::string_view origin,
                                          const po::options_description& flags) {
  // Check the shape of every line ourselves first: boost's messages do not name the line.
  std::istringstream lines{std::string(text)};
  std::string line;
  int lineNo = 0;
  while (std::getline(lines, line)) {
    ++lineNo;
    std::string_view l = trim(line);
    if (l.empty() || l.front() == '#') continue;
    auto eq = l.find('=');
    std::string where = std::string(origin) + ":" + std::to_string(lineNo);
    if (eq == std::string_view::npos) return invalid(where + ": expected 'key = value'");
    std::string key(trim(l.substr(0, eq)));
    if (key.empty()) return invalid(where + ": missing key");
    if (!flags.find_nothrow(key, false)) return invalid(where + ": unknown key '" + key + "'");
  }
  try {
    po::variables_map vm;
    std::istringstream in{std::string(text)};
    po::store(po::parse_config_file(in, flags, false), vm);
    return vm;
  } catch (const std::exception& e) {
    return invalid(std::string(origin) + ": " + e.what());
  }
}

Result<Options> parseOptions(int argc, const char* const* argv,
                             const po::options_description& flags, std::string_view usage) {
  po::options_description all;
  all.add_options()("help,h", "print this help and exit")(
      "config", po::value<std::string>(), "read options from FILE (key = value lines)");
  all.add(flags);
  Options out;
  try {
    // No positional arguments: a stray word is a mistake, not something to ignore.
    po::positional_options_description none;
    po::store(po::command_line_parser(argc, argv).options(all).positional(none).run(),
              out.values);
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  if (out.values.count("help")) {
    std::cout << usage << "\n\n" << all << std::flush;
    out.help = true;
    return out;
  }
  if (out.values.count("config")) {
    std::string path = out.values["config"].as<std::string>();
    std::ifstream f(path);
    if (!f) return invalid("cannot read config file '" + path + "'");
    std::stringstream text;
    text << f.rdbuf();
    auto file = parseConfigText(text.str(), path, flags);
    if (!file) return file.error();
    // Values already stored (from the command line) win: po::store never overwrites.
    try {
      for (auto& [key, value] : *file) {
        if (!out.values.count(key) || out.values[key].defaulted()) {
          out.values.erase(key);
          out.values.insert({key, value});
        }
      }
    } catch (const std::exception& e) {
      return invalid(path + ": " + e.what());
    }
  }
  try {
    po::notify(out.values);
  } catch (const std::exception& e) {
    return invalid(e.what());
  }
  return out;
}

}  // namespace tessera
