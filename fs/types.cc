#include "fs/types.h"

#include <charconv>

namespace tessera {
namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool parseSmall(std::string_view s, unsigned& out) {
  s = trim(s);
  if (s.empty() || s.size() > 3) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

Result<Layout> Layout::parse(std::string_view text) {
  auto bad = [&](const char* why) {
    return Error{Errc::kInvalid, std::string("bad policy '") + std::string(text) + "': " + why +
                                     " (expected ec(k,m) or replica(n))"};
  };
  std::string_view s = trim(text);
  auto open = s.find('(');
  if (open == std::string_view::npos || s.back() != ')') return bad("no parentheses");
  std::string_view name = trim(s.substr(0, open));
  std::string_view args = s.substr(open + 1, s.size() - open - 2);
  if (name == "ec") {
    auto comma = args.find(',');
    unsigned k, m;
    if (comma == std::string_view::npos || !parseSmall(args.substr(0, comma), k) ||
        !parseSmall(args.substr(comma + 1), m)) {
      return bad("ec takes two numbers");
    }
    if (k < 1 || k > 16) return bad("k must be 1..16");
    if (m < 1 || m > 8) return bad("m must be 1..8");
    return Layout::ec(uint8_t(k), uint8_t(m));
  }
  if (name == "replica") {
    unsigned n;
    if (!parseSmall(args, n)) return bad("replica takes one number");
    if (n < 1 || n > 8) return bad("n must be 1..8");
    return Layout::replica(uint8_t(n));
  }
  return bad("unknown kind");
}

std::string Layout::toString() const {
  if (kind == Kind::kReplica) return "replica(" + std::to_string(m + 1) + ")";
  return "ec(" + std::to_string(k) + "," + std::to_string(m) + ")";
}

bool Layout::valid() const {
  if (kind == Kind::kReplica) return k == 1 && m <= 7;
  return kind == Kind::kEc && k >= 1 && k <= 16 && m >= 1 && m <= 8;
}

Status checkServerToken(std::string_view token) {
  if (token.size() < kMinServerTokenLen || token.size() > kMaxServerTokenLen) {
    return Error{Errc::kInvalid, "server token of " + std::to_string(token.size()) +
                                     " characters (must be " + std::to_string(kMinServerTokenLen) +
                                     " to " + std::to_string(kMaxServerTokenLen) + ")"};
  }
  for (char c : token) {
    if (c <= ' ' || c > '~')
      return Error{Errc::kInvalid, "server token with a non-printable character"};
  }
  return Status();
}

}  // namespace tessera
