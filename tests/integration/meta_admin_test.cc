// The admin command against a real meta Raft group of three: `tessera status` shows every member
// with its role and lag, `tessera meta transfer-leader` moves leadership, `meta remove` and
// `meta add` (with the tessera-meta command line it prints, on a fresh directory) change the
// group, and a member killed with SIGKILL shows as down while the cluster stays healthy.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <sstream>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

// One member line of `tessera status`.
struct MemberRow {
  uint64_t id = 0;
  std::string address, role, term, match, applied, lag, active;
};

// The member table under the "meta" line: rows that start with a member id.
std::vector<MemberRow> memberRows(const std::string& status) {
  std::vector<MemberRow> rows;
  std::istringstream in(status);
  std::string line;
  bool inTable = false;
  while (std::getline(in, line)) {
    if (line.rfind("  ID ", 0) == 0 && line.find(" MATCH ") != std::string::npos) {
      inTable = true;
      continue;
    }
    if (!inTable) continue;
    std::istringstream fields(line);
    MemberRow r;
    if (!(fields >> r.id)) break;
    fields >> r.address >> r.role >> r.term >> r.match >> r.applied >> r.lag >> r.active;
    rows.push_back(r);
  }
  return rows;
}

const MemberRow* rowOf(const std::vector<MemberRow>& rows, uint64_t id) {
  for (auto& r : rows) {
    if (r.id == id) return &r;
  }
  return nullptr;
}

size_t countRole(const std::vector<MemberRow>& rows, const std::string& role) {
  return size_t(std::count_if(rows.begin(), rows.end(),
                              [&](const MemberRow& r) { return r.role == role; }));
}

RunResult admin(const Cluster& c, const std::vector<std::string>& args,
                const std::string& timeout = "20s") {
  std::vector<std::string> argv{adminBin(), "--meta", c.meta(), "--timeout", timeout};
  argv.insert(argv.end(), args.begin(), args.end());
  return run(argv, 60'000);
}

// Polls `tessera status` until `ok` holds for its output (and exit code), up to `timeoutMs`.
template <typename F>
RunResult statusUntil(const Cluster& c, int timeoutMs, F ok) {
  RunResult r;
  for (int waited = 0;; waited += 250) {
    r = admin(c, {"status"}, "5s");
    if (ok(r) || waited >= timeoutMs) return r;
    usleep(250'000);  // polling the cluster's state, bounded by the timeout
  }
}

bool allCaughtUp(const std::vector<MemberRow>& rows) {
  return std::all_of(rows.begin(), rows.end(), [](const MemberRow& r) {
    return r.lag == "0" && r.active == "yes" && r.role != "down";
  });
}

// A port on 127.0.0.1 where nothing listens.
int deadPort() {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  close(s);
  return ntohs(a.sin_port);
}

void expectOneLineError(const RunResult& r, const std::string& words) {
  CAPTURE(r.output);
  CHECK_FALSE(r.timedOut);
  CHECK(r.exitCode == 1);
  CHECK(r.output.find("tessera: error: ") == 0);
  CHECK(r.output.find(words) != std::string::npos);
  CHECK(std::count(r.output.begin(), r.output.end(), '\n') == 1);
}

// The id in a chunk server's DIR/server.id, 0 if it has none.
uint64_t savedId(const std::string& dataDir) {
  // A restarted server writes it once its registration is answered, which can come after the
  // leader counts it up again (its old heartbeats have not timed out yet): wait for it, bounded.
  std::string path = dataDir + "/server.id";
  for (int i = 0; i < 200 && access(path.c_str(), F_OK) != 0; ++i) usleep(50'000);  // 10 s
  std::istringstream in(readAll(path));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("id = ", 0) == 0) return std::stoull(line.substr(5));
  }
  return 0;
}

}  // namespace

TEST_CASE("meta admin: status, transfer-leader, remove, add back with --join, and a killed member") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.metas = 3;
  o.chunks = 3;
  o.policy = "replica(2)";
  Cluster c(o);
  int leader = c.leader();
  REQUIRE(leader >= 0);

  // Three members, one leader, every follower caught up.
  auto st = statusUntil(c, 15'000, [](const RunResult& r) {
    auto rows = memberRows(r.output);
    return r.exitCode == 0 && rows.size() == 3 && allCaughtUp(rows);
  });
  CAPTURE(st.output);
  REQUIRE(st.exitCode == 0);
  auto rows = memberRows(st.output);
  REQUIRE(rows.size() == 3);
  CHECK(countRole(rows, "leader") == 1);
  CHECK(countRole(rows, "follower") == 2);
  CHECK(rowOf(rows, uint64_t(leader + 1))->role == "leader");
  CHECK(st.output.find("meta    leader " + std::to_string(leader + 1) + " at " +
                       c.metaAddress(leader)) != std::string::npos);
  CHECK(st.output.find("chunk servers: 3 up, 0 down") != std::string::npos);
  // One address is enough: the others are learned from it.
  auto viaOne = run({adminBin(), "--meta", c.metaAddress((leader + 1) % 3), "status"}, 30'000);
  CHECK(viaOne.exitCode == 0);
  CHECK(memberRows(viaOne.output).size() == 3);

  // Leadership moves to the member named, and the command waits until it leads.
  int target = leader == 0 ? 1 : 0;
  auto moved = admin(c, {"meta", "transfer-leader", std::to_string(target + 1)});
  CAPTURE(moved.output);
  REQUIRE(moved.exitCode == 0);
  CHECK(moved.output.find("leader is now member " + std::to_string(target + 1)) !=
        std::string::npos);
  CHECK(c.leader() == target);
  leader = target;

  // The mount follows the leader: policies and data work as before.
  REQUIRE(mkdir((c.mnt() + "/vm").c_str(), 0755) == 0);
  auto set = run({adminBin(), "policy", "set", c.mnt() + "/vm", "replica(3)"}, 30'000);
  CHECK_MESSAGE(set.exitCode == 0, set.output);
  auto get = run({adminBin(), "policy", "get", c.mnt() + "/vm"}, 30'000);
  CHECK(get.output == "replica(3)\n");
  writeAll(c.mnt() + "/vm/disk", "before the membership changes");

  // Remove member 3 (a follower now) by address: two members remain.
  const int gone = 2;
  REQUIRE(leader != gone);
  auto removed = admin(c, {"meta", "remove", c.metaAddress(gone)});
  CAPTURE(removed.output);
  REQUIRE(removed.exitCode == 0);
  CHECK(removed.output.find("removed member 3") != std::string::npos);
  c.stopMeta(gone);
  st = statusUntil(c, 10'000, [](const RunResult& r) {
    return r.exitCode == 0 && memberRows(r.output).size() == 2;
  });
  CHECK(st.exitCode == 0);
  CHECK(memberRows(st.output).size() == 2);
  CHECK(rowOf(memberRows(st.output), 3) == nullptr);

  // Add it back on a fresh directory: `meta add` picks id 3 (the highest + 1) and prints the
  // command line that starts it with --join; it catches up from the leader.
  std::string fresh = c.dir() + "/meta3-fresh";
  auto added = admin(c, {"meta", "add", c.metaAddress(gone), "--dir", fresh});
  CAPTURE(added.output);
  REQUIRE(added.exitCode == 0);
  CHECK(added.output.find("added member 3 at " + c.metaAddress(gone)) != std::string::npos);
  auto at = added.output.find("  tessera-meta ");
  REQUIRE(at != std::string::npos);
  std::istringstream words(added.output.substr(at, added.output.find('\n', at) - at));
  std::vector<std::string> argv;
  for (std::string w; words >> w;) argv.push_back(w);
  CHECK(std::find(argv.begin(), argv.end(), "--join") != argv.end());
  argv[0] = buildDir() + "/meta/tessera-meta";
  Process joined = Process::spawn(argv, c.dir() + "/meta3-joined.log");
  st = statusUntil(c, 20'000, [](const RunResult& r) {
    auto rows = memberRows(r.output);
    return r.exitCode == 0 && rows.size() == 3 && allCaughtUp(rows);
  });
  CAPTURE(st.output);
  CHECK(st.exitCode == 0);
  rows = memberRows(st.output);
  REQUIRE(rows.size() == 3);
  CHECK(rowOf(rows, 3) != nullptr);
  CHECK(rowOf(rows, 3)->role == "follower");
  CHECK(rowOf(rows, 3)->lag == "0");
  CHECK(countRole(rows, "leader") == 1);

  // SIGKILL a follower: it shows as down, the other two are a majority, status exits 0.
  int victim = leader == 0 ? 1 : 0;
  c.stopMeta(victim, SIGKILL);
  st = statusUntil(c, 10'000, [&](const RunResult& r) {
    auto rows = memberRows(r.output);
    auto row = rowOf(rows, uint64_t(victim + 1));
    return rows.size() == 3 && row && row->role == "down";
  });
  CAPTURE(st.output);
  CHECK(st.exitCode == 0);
  CHECK(rowOf(memberRows(st.output), uint64_t(victim + 1))->role == "down");
  CHECK(countRole(memberRows(st.output), "leader") == 1);
  CHECK(readAll(c.mnt() + "/vm/disk") == "before the membership changes");
  writeAll(c.mnt() + "/vm/after", "still writable");
  CHECK(readAll(c.mnt() + "/vm/after") == "still writable");
  joined.stop(5'000);
}

TEST_CASE("meta admin: bad input, unknown members and an unreachable cluster are one clear line") {
  std::string dead = "127.0.0.1:" + std::to_string(deadPort());
  auto tessera = [&](std::vector<std::string> args) {
    std::vector<std::string> argv{adminBin(), "--meta", dead, "--timeout", "1s"};
    argv.insert(argv.end(), args.begin(), args.end());
    return run(argv, 30'000);
  };
  expectOneLineError(tessera({"meta", "add", "nonsense"}), "nonsense");
  expectOneLineError(tessera({"meta", "add", "127.0.0.1:7000", "--id", "zero"}), "member id");
  expectOneLineError(tessera({"meta", "remove"}), "usage");
  expectOneLineError(tessera({"meta", "transfer-leader", "x"}), "member id");
  expectOneLineError(tessera({"meta", "frobnicate"}), "unknown meta command");
  expectOneLineError(tessera({"meta", "add", "127.0.0.1:7000"}), "cannot reach meta server");
  expectOneLineError(tessera({"meta", "remove", "2"}), "cannot reach meta server");
  expectOneLineError(tessera({"meta", "transfer-leader"}), "cannot reach meta server");
  expectOneLineError(tessera({"status"}), "cannot reach meta server");
  expectOneLineError(run({adminBin(), "--meta", dead + ",nonsense", "status"}, 30'000),
                     "nonsense");

  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.metas = 3;
  o.chunks = 0;
  o.mount = false;
  Cluster c(o);
  REQUIRE(c.leader() >= 0);
  auto admin3 = [&](std::vector<std::string> args) { return admin(c, args, "10s"); };
  expectOneLineError(admin3({"meta", "remove", "9"}), "no member 9");
  expectOneLineError(admin3({"meta", "remove", dead}), "no member");
  expectOneLineError(admin3({"meta", "transfer-leader", "9"}), "no member 9");
  expectOneLineError(admin3({"meta", "add", c.metaAddress(1)}), "already member 2");
  expectOneLineError(admin3({"meta", "add", dead, "--id", "2"}), "taken");
}

TEST_CASE("meta admin: a chunk server keeps its id across restarts, lost answers and leader "
          "changes") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options o;
  o.metas = 3;
  o.chunks = 3;
  o.policy = "replica(2)";
  o.mount = false;
  Cluster c(o);
  std::vector<uint64_t> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(savedId(c.chunkDir(i)));
    CHECK(ids.back() != 0);
    CHECK(readAll(c.chunkDir(i) + "/server.token").size() == 33);
  }
  std::sort(ids.begin(), ids.end());
  CHECK(std::adjacent_find(ids.begin(), ids.end()) == ids.end());
  auto listsExactly3 = [](const RunResult& r) {
    return r.exitCode == 0 && r.output.find("chunk servers: 3 up, 0 down") != std::string::npos;
  };

  // A restart on its data directory: the same id.
  uint64_t id0 = savedId(c.chunkDir(0));
  c.stopChunk(0);
  c.startChunk(0);
  REQUIRE(c.waitChunksUp(3));
  CHECK(savedId(c.chunkDir(0)) == id0);

  // Its first registration was applied but the answer never arrived (server.id was not
  // written): the token gets it the same id, from this leader and from the next one.
  for (int round = 0; round < 2; ++round) {
    CAPTURE(round);
    uint64_t id1 = savedId(c.chunkDir(1));
    c.stopChunk(1);
    REQUIRE(unlink((c.chunkDir(1) + "/server.id").c_str()) == 0);
    c.startChunk(1);
    REQUIRE(c.waitChunksUp(3));
    CHECK(savedId(c.chunkDir(1)) == id1);
    auto st = statusUntil(c, 10'000, listsExactly3);
    CAPTURE(st.output);
    CHECK(listsExactly3(st));
    if (round == 0) {
      int leader = c.leader();
      REQUIRE(leader >= 0);
      int target = (leader + 1) % 3;
      auto moved = admin(c, {"meta", "transfer-leader", std::to_string(target + 1)});
      CAPTURE(moved.output);
      REQUIRE(moved.exitCode == 0);
    }
  }
}
