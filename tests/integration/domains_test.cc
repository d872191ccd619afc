// Failure domains with real processes: six chunk servers labelled in three racks of two. Every
// ec(4,2) chunk keeps at most m = 2 shards in any rack, so killing both servers of a rack
// (SIGKILL) leaves every file readable and identical.
#include <signal.h>
#include <sys/stat.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "tests/integration/helpers.h"

using namespace tessera::test;

namespace {

uint64_t serverId(Cluster& cluster, int i) {
  std::ifstream f(cluster.chunkDir(i) + "/server.id");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("id = ", 0) == 0) return std::stoull(line.substr(5));
  }
  return 0;
}

struct ChunkRow {
  uint64_t index = 0, id = 0;
  std::string layout;
  std::vector<uint64_t> servers;
};

// `tessera chunks FILE`.
std::vector<ChunkRow> chunksOf(Cluster& cluster, const std::string& path) {
  auto r = run({adminBin(), "--meta", cluster.meta(), "chunks", path}, 30'000);
  INFO(r.output);
  REQUIRE(r.exitCode == 0);
  std::vector<ChunkRow> rows;
  std::istringstream in(r.output);
  std::string line;
  std::getline(in, line);  // header
  while (std::getline(in, line)) {
    std::istringstream cols(line);
    ChunkRow row;
    cols >> row.index >> row.id >> row.layout;
    uint64_t s;
    while (cols >> s) row.servers.push_back(s);
    rows.push_back(row);
  }
  return rows;
}

}  // namespace

TEST_CASE("domains: ec(4,2) over three racks keeps two shards per rack and a whole rack lost loses nothing") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  for (int i = 0; i < 6; ++i) options.chunkArgsOf.push_back({"--rack", "r" + std::to_string(i / 2)});
  Cluster cluster(options);
  uint64_t seed = testSeed(31);
  std::mt19937_64 rng(seed);

  {
    // The labels reach the meta leader.
    std::string status = cluster.status();
    INFO(status);
    for (int i = 0; i < 6; ++i) {
      CHECK(status.find("-/r" + std::to_string(i / 2) + "/host" + std::to_string(i)) !=
            std::string::npos);
    }
  }
  std::map<uint64_t, std::string> rackOf;  // server id → rack
  for (int i = 0; i < 6; ++i) rackOf[serverId(cluster, i)] = "r" + std::to_string(i / 2);
  REQUIRE(rackOf.size() == 6);

  std::string dir = cluster.mnt() + "/vm";
  REQUIRE(mkdir(dir.c_str(), 0755) == 0);
  std::map<std::string, std::string> files;
  for (int i = 0; i < 24; ++i) {
    size_t size = i == 0 ? (70u << 20) : 1 + size_t(rng() % 1'500'000);  // one of two chunks
    std::string path = dir + "/f" + std::to_string(i);
    files[path] = randomBytes(rng, size);
    writeAll(path, files[path]);
  }

  int chunks = 0;
  for (auto& [path, content] : files) {
    CAPTURE(path);
    auto rows = chunksOf(cluster, path);
    CHECK(rows.size() == (content.size() + (64u << 20) - 1) / (64u << 20));
    for (auto& row : rows) {
      CAPTURE(row.id);
      ++chunks;
      CHECK(row.layout == "ec(4,2)");
      REQUIRE(row.servers.size() == 6);
      CHECK(std::set<uint64_t>(row.servers.begin(), row.servers.end()).size() == 6);
      std::map<std::string, int> perRack;
      for (uint64_t s : row.servers) {
        REQUIRE(rackOf.count(s) == 1);
        perRack[rackOf[s]]++;
      }
      for (auto& [rack, n] : perRack) {
        CAPTURE(rack);
        CHECK(n <= 2);
      }
    }
  }
  MESSAGE(chunks << " chunks checked");
  CHECK(chunks == 25);

  int rack = int(rng() % 3);
  MESSAGE("killing both servers of rack r" << rack);
  cluster.stopChunk(2 * rack, SIGKILL);
  cluster.stopChunk(2 * rack + 1, SIGKILL);
  cluster.unmount();  // no page cache: every byte comes from the other two racks
  cluster.mount();
  for (auto& [path, content] : files) {
    CAPTURE(path);
    std::string got = readAll(path);
    REQUIRE(got.size() == content.size());
    CHECK((got == content));
  }
  CHECK(cluster.logProblems().empty());
}

TEST_CASE("domains: a chunk the servers up cannot hold safely is refused, unless --placement degraded") {
  TESSERA_REQUIRE_FUSE();
  uint64_t seed = testSeed(37);
  std::mt19937_64 rng(seed);
  std::string content = randomBytes(rng, 1'000'003);
  Cluster::Options options;
  options.chunks = 5;  // ec(4,2) needs 6

  SUBCASE("strict (the default): the write fails, the meta says why") {
    Cluster cluster(options);
    std::string path = cluster.mnt() + "/f";
    bool failed = false;
    try {
      writeAll(path, content);
    } catch (const std::exception& e) {
      MESSAGE("write refused: " << std::string(e.what()));
      failed = true;
    }
    CHECK(failed);
    std::ifstream log(cluster.dir() + "/mount.log");
    std::stringstream text;
    text << log.rdbuf();
    INFO(text.str());
    CHECK(text.str().find("ec(4,2) needs 6 chunk servers up, 5 are") != std::string::npos);
  }
  SUBCASE("degraded: placed on the five, one of them holding two shards; reads back") {
    options.metaArgs = {"--placement", "degraded"};
    Cluster cluster(options);
    std::string path = cluster.mnt() + "/f";
    writeAll(path, content);
    auto rows = chunksOf(cluster, path);
    REQUIRE(rows.size() == 1);
    REQUIRE(rows[0].servers.size() == 6);
    CHECK(std::set<uint64_t>(rows[0].servers.begin(), rows[0].servers.end()).size() == 5);
    cluster.unmount();
    cluster.mount();
    CHECK((readAll(path) == content));
  }
}
