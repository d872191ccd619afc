// tessera: the admin command.
//   tessera [--meta HOST:PORT] status
//   tessera policy get DIR
//   tessera policy set DIR ec(k,m)|replica(n)
// `status` asks the meta server (--meta, else $TESSERA_META, else `meta` in --config FILE).
// `policy` works through a mounted directory (the tessera.policy attribute), so it needs no
// address: new files under DIR get the policy; existing chunks keep theirs.
#include <sys/xattr.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"
#include "fs/types.h"
#include "fs/wire.h"

namespace po = boost::program_options;
using namespace tessera;

namespace {

constexpr const char* kUsage =
    "usage: tessera [--meta HOST:PORT] [--timeout DURATION] COMMAND\n"
    "commands:\n"
    "  status                          the meta server, every chunk server, capacity\n"
    "  policy get DIR                  the storage policy new files under DIR get\n"
    "  policy set DIR POLICY           ec(k,m) or replica(n) for new files under DIR";

int fail(const std::string& what) {
  std::cerr << "tessera: error: " << what << std::endl;
  return 1;
}

std::string human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

std::string age(uint64_t ms) {
  if (ms == UINT64_MAX) return "never";
  char buf[32];
  if (ms < 60'000) snprintf(buf, sizeof buf, "%.1fs ago", double(ms) / 1000);
  else if (ms < 3'600'000) snprintf(buf, sizeof buf, "%lum ago", (unsigned long)(ms / 60'000));
  else snprintf(buf, sizeof buf, "%luh ago", (unsigned long)(ms / 3'600'000));
  return buf;
}

std::string uptime(uint64_t ms) {
  uint64_t s = ms / 1000;
  char buf[48];
  if (s < 3600) snprintf(buf, sizeof buf, "%lum%lus", (unsigned long)(s / 60), (unsigned long)(s % 60));
  else snprintf(buf, sizeof buf, "%luh%lum", (unsigned long)(s / 3600), (unsigned long)(s % 3600 / 60));
  return buf;
}

int status(const Address& meta, uint64_t timeoutMs) {
  auto io = kj::setupAsyncIo();
  auto& timer = io.provider->getTimer();
  auto conn = Connection::open(io.provider->getNetwork(), timer, meta, timeoutMs).wait(io.waitScope);
  if (!conn) return fail("cannot reach meta server at " + meta.toString() + ": " + conn.error().toString());
  auto service = (*conn)->bootstrap<proto::MetaService>();
  int rc = 0;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
    auto r = withTimeout(timer, timeoutMs, service.statusRequest().send()).wait(io.waitScope);
    auto req = service.getxattrRequest();
    req.setInode(kRootInode.value);
    req.setName("tessera.policy");
    auto policyReply = withTimeout(timer, timeoutMs, req.send()).wait(io.waitScope);
    std::string policy = "?";
    if (fromWire(policyReply.getError())) {
      auto v = policyReply.getValue();
      policy.assign(reinterpret_cast<const char*>(v.begin()), v.size());
    }
    auto servers = r.getServers();
    size_t up = 0;
    for (auto s : servers) up += s.getUp();
    auto stat = r.getStat();
    printf("cluster %s\n", r.getClusterId().cStr());
    printf("meta    %s  leader  up %s  (single meta server)\n", meta.toString().c_str(),
           uptime(r.getUptimeMs()).c_str());
    printf("files   %lu inodes, %lu chunks; root policy %s\n", (unsigned long)r.getInodes(),
           (unsigned long)r.getChunks(), policy.c_str());
    printf("space   %s usable, %s free\n", human(stat.getTotalBytes()).c_str(),
           human(stat.getFreeBytes()).c_str());
    printf("\nchunk servers: %zu up, %zu down\n", up, servers.size() - up);
    printf("  %-4s %-22s %-5s %-28s %10s %10s %10s %8s  %s\n", "ID", "ADDRESS", "STATE",
           "SITE/RACK/HOST", "CAPACITY", "USED", "FREE", "SHARDS", "HEARTBEAT");
    for (auto s : servers) {
      auto label = [](capnp::Text::Reader t) { return t.size() ? std::string(t.cStr()) : "-"; };
      std::string where = label(s.getSite()) + "/" + label(s.getRack()) + "/" + label(s.getHost());
      printf("  %-4lu %-22s %-5s %-28s %10s %10s %10s %8lu  %s\n", (unsigned long)s.getId(),
             s.getAddress().cStr(), s.getUp() ? "up" : "DOWN", where.c_str(),
             human(s.getCapacityBytes()).c_str(), human(s.getUsedBytes()).c_str(),
             human(s.getFreeBytes()).c_str(), (unsigned long)s.getShards(),
             age(s.getLastHeartbeatMs()).c_str());
    }
  })) {
    rc = fail("meta server at " + meta.toString() + ": " + errorFromException(*e, "status").toString());
  }
  return rc;
}

int policyGet(const std::string& dir) {
  std::vector<char> buf(256);
  ssize_t n = getxattr(dir.c_str(), "tessera.policy", buf.data(), buf.size());
  if (n < 0) {
    if (errno == ENOTSUP || errno == ENODATA) return fail(dir + " is not on a Tessera mount");
    return fail(dir + ": " + strerror(errno));
  }
  printf("%.*s\n", int(n), buf.data());
  return 0;
}

int policySet(const std::string& dir, const std::string& text) {
  auto layout = Layout::parse(text);
  if (!layout) return fail(layout.error().detail);
  std::string canonical = layout->toString();
  if (setxattr(dir.c_str(), "tessera.policy", canonical.data(), canonical.size(), 0) != 0) {
    if (errno == ENOTSUP) return fail(dir + " is not on a Tessera mount");
    if (errno == EBUSY) return fail(dir + " already has data; a policy applies to new files");
    return fail(dir + ": " + strerror(errno));
  }
  printf("%s: %s\n", dir.c_str(), canonical.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  po::options_description flags("tessera options");
  flags.add_options()
      ("meta", po::value<std::string>(), "HOST:PORT of the meta server (or $TESSERA_META)")
      ("timeout", po::value<std::string>()->default_value("5s"), "give up after this long")
      ("command", po::value<std::vector<std::string>>(), "command and its arguments");
  std::vector<const char*> args{argv[0]};
  bool inCommand = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!inCommand && a.rfind("-", 0) != 0) inCommand = true;
    if (inCommand) {
      args.push_back("--command");
    }
    args.push_back(argv[i]);
    if (!inCommand && (a == "--meta" || a == "--timeout" || a == "--config") && i + 1 < argc) {
      args.push_back(argv[++i]);
    }
  }
  auto opts = parseOptions(int(args.size()), args.data(), flags, kUsage);
  if (!opts) return fail(opts.error().detail);
  if (opts->help) return 0;
  auto& vm = opts->values;
  std::vector<std::string> cmd;
  if (vm.count("command")) cmd = vm["command"].as<std::vector<std::string>>();
  if (cmd.empty()) {
    std::cerr << kUsage << std::endl;
    return 2;
  }
  auto timeout = parseDurationMs(vm["timeout"].as<std::string>());
  if (!timeout) return fail(timeout.error().detail);
  if (cmd[0] == "status") {
    if (cmd.size() != 1) return fail("status takes no arguments");
    std::string addr;
    if (vm.count("meta")) addr = vm["meta"].as<std::string>();
    else if (const char* env = getenv("TESSERA_META")) addr = env;
    else return fail("no meta server: pass --meta HOST:PORT or set TESSERA_META");
    auto meta = Address::parse(addr);
    if (!meta) return fail(meta.error().detail);
    return status(*meta, *timeout);
  }
  if (cmd[0] == "policy") {
    if (cmd.size() == 3 && cmd[1] == "get") return policyGet(cmd[2]);
    if (cmd.size() == 4 && cmd[1] == "set") return policySet(cmd[2], cmd[3]);
    return fail("usage: tessera policy get DIR | tessera policy set DIR POLICY");
  }
  return fail("unknown command '" + cmd[0] + "' (try --help)");
}
