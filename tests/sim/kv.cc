#include "tests/sim/kv.h"

#include <cinttypes>
#include <cstdio>

namespace tessera::meta::raft::sim {

uint64_t fnv1a(const void* data, size_t size, uint64_t h) {
  auto p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string KvCommand::encode() const {
  char buf[128];
  int n = std::snprintf(buf, sizeof buf, "%d %d %" PRIu64 " %d %" PRId64 " %" PRId64, int(kind),
                        client, seq, key, value, expected);
  return std::string(buf, n);
}

std::optional<KvCommand> KvCommand::decode(const std::string& data) {
  KvCommand c;
  int kind = 0;
  if (std::sscanf(data.c_str(), "%d %d %" SCNu64 " %d %" SCNd64 " %" SCNd64, &kind, &c.client,
                  &c.seq, &c.key, &c.value, &c.expected) != 6 ||
      kind < 0 || kind > 1) {
    return std::nullopt;
  }
  c.kind = static_cast<KvCommand::Kind>(kind);
  return c;
}

std::optional<int64_t> Kv::apply(const KvCommand& cmd) {
  Session& s = sessions_[cmd.client];
  if (cmd.seq < s.seq) return std::nullopt;
  if (cmd.seq == s.seq) return s.result;
  int64_t result = 1;
  if (cmd.kind == KvCommand::Kind::kPut) {
    values_.at(cmd.key) = cmd.value;
  } else if (values_.at(cmd.key) == cmd.expected) {
    values_.at(cmd.key) = cmd.value;
  } else {
    result = 0;
  }
  s = Session{cmd.seq, result};
  return result;
}

std::string Kv::encode() const {
  std::string out = std::to_string(values_.size());
  for (int64_t v : values_) out += " " + std::to_string(v);
  out += " " + std::to_string(sessions_.size());
  for (const auto& [client, s] : sessions_) {
    out +=
        " " + std::to_string(client) + " " + std::to_string(s.seq) + " " + std::to_string(s.result);
  }
  return out;
}

Kv Kv::decode(const std::string& data) {
  Kv kv;
  const char* p = data.c_str();
  char* end = nullptr;
  size_t n = std::strtoull(p, &end, 10);
  p = end;
  for (size_t i = 0; i < n; ++i) {
    kv.values_.push_back(std::strtoll(p, &end, 10));
    p = end;
  }
  size_t sessions = std::strtoull(p, &end, 10);
  p = end;
  for (size_t i = 0; i < sessions; ++i) {
    int client = int(std::strtol(p, &end, 10));
    p = end;
    Session s;
    s.seq = std::strtoull(p, &end, 10);
    p = end;
    s.result = std::strtoll(p, &end, 10);
    p = end;
    kv.sessions_[client] = s;
  }
  return kv;
}

uint64_t Kv::hash() const {
  std::string e = encode();
  return fnv1a(e.data(), e.size());
}

}  // namespace tessera::meta::raft::sim
