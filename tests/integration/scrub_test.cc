// Scrubbing with real processes and real bytes: blocks of shard files flipped on disk are found
// by the chunk servers' scrubbers after `tessera scrub --now` and listed by the meta leader —
// exactly those shards — while every read returns the right bytes.
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <tuple>

#include "tests/integration/helpers.h"

using namespace tessera::test;
namespace stdfs = std::filesystem;

namespace {

constexpr uint64_t kDataOffset = 69632;  // chunk/shard_file.h: header and CRC table before data

double nowSeconds() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

// The id the meta cluster gave chunk server i (DIR/server.id).
uint64_t serverId(Cluster& cluster, int i) {
  std::ifstream f(cluster.chunkDir(i) + "/server.id");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("id = ", 0) == 0) return std::stoull(line.substr(5));
  }
  return 0;
}

struct ShardFileInfo {
  std::string path;
  uint64_t chunk = 0;
  unsigned shard = 0;
  uint64_t dataBytes = 0;
  int server = 0;  // index in the cluster
};

std::vector<ShardFileInfo> shardFiles(Cluster& cluster) {
  std::vector<ShardFileInfo> out;
  for (int i = 0; i < cluster.chunks(); ++i) {
    for (auto& e : stdfs::recursive_directory_iterator(cluster.chunkDir(i) + "/shards")) {
      if (!e.is_regular_file()) continue;
      std::string name = e.path().filename();
      if (name.size() < 18 || name[16] != '.') continue;
      ShardFileInfo s;
      s.path = e.path();
      s.chunk = std::stoull(name.substr(0, 16), nullptr, 16);
      s.shard = unsigned(std::stoul(name.substr(17)));
      uint64_t size = e.file_size();
      s.dataBytes = size > kDataOffset ? size - kDataOffset : 0;
      s.server = i;
      out.push_back(s);
    }
  }
  std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.path < b.path; });
  return out;
}

void flipByte(const std::string& path, uint64_t at) {
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char b;
  REQUIRE(pread(fd, &b, 1, off_t(at)) == 1);
  b ^= 0x5a;
  REQUIRE(pwrite(fd, &b, 1, off_t(at)) == 1);
  close(fd);
}

using ShardAt = std::tuple<uint64_t, unsigned, uint64_t>;  // chunk, shard, server id

// The damaged shards `tessera scrub` lists: (chunk, shard, server) → the BAD BLOCKS column.
std::map<ShardAt, std::string> listedDamage(const std::string& output) {
  std::map<ShardAt, std::string> out;
  std::istringstream in(output);
  std::string line;
  bool inTable = false;
  while (std::getline(in, line)) {
    if (line.rfind("damaged shards:", 0) == 0) {
      inTable = true;
      continue;
    }
    if (!inTable || line.find("CHUNK") != std::string::npos) continue;
    unsigned long chunk, server;
    unsigned shard;
    int used = 0;
    if (sscanf(line.c_str(), " %lu %u %lu %n", &chunk, &shard, &server, &used) == 3) {
      out[{chunk, shard, server}] = line.substr(size_t(used));
    }
  }
  return out;
}

void checkFiles(const std::map<std::string, std::string>& files) {
  for (auto& [path, content] : files) {
    CAPTURE(path);
    std::string got = readAll(path);
    REQUIRE(got.size() == content.size());
    CHECK((got == content));
  }
}

}  // namespace

TEST_CASE("scrub: flipped blocks in shard files are found and reported exactly while reads stay right") {
  TESSERA_REQUIRE_FUSE();
  Cluster::Options options;
  // Scrub only on request, fast, so the test sees the whole pass.
  for (int i = 0; i < 6; ++i) {
    options.chunkArgsOf.push_back({"--scrub-rate", "400", "--scrub-interval", "0"});
  }
  Cluster cluster(options);
  uint64_t seed = testSeed(23);
  std::mt19937_64 rng(seed);
  std::string ec = cluster.mnt() + "/ec";
  std::string rep = cluster.mnt() + "/rep";
  REQUIRE(mkdir(ec.c_str(), 0755) == 0);
  REQUIRE(mkdir(rep.c_str(), 0755) == 0);
  REQUIRE(run({adminBin(), "policy", "set", rep, "replica(3)"}).exitCode == 0);
  std::map<std::string, std::string> files;
  for (auto [name, size] : std::vector<std::pair<std::string, size_t>>{
           {"a", 3'000'017}, {"b", 1'048'576}, {"c", 300'000}, {"d", 2'000'000}}) {
    files[ec + "/" + name] = randomBytes(rng, size);
    files[rep + "/" + name] = randomBytes(rng, size);
  }
  for (auto& [path, content] : files) writeAll(path, content);
  cluster.unmount();

  // Damage shards of distinct chunks (so every stripe stays readable): a few blocks in some, the
  // header of one.
  auto all = shardFiles(cluster);
  REQUIRE(all.size() >= 20);
  std::shuffle(all.begin(), all.end(), rng);
  std::map<ShardAt, std::set<uint64_t>> expected;  // empty set: whole shard
  std::set<uint64_t> chunksHit;
  int wanted = 5;
  for (auto& s : all) {
    if (int(expected.size()) == wanted) break;
    if (chunksHit.count(s.chunk) || s.dataBytes < 2 * 4096) continue;
    chunksHit.insert(s.chunk);
    ShardAt at{s.chunk, s.shard, serverId(cluster, s.server)};
    REQUIRE(std::get<2>(at) != 0);
    if (expected.empty()) {
      flipByte(s.path, 100);  // in the header: the whole shard is unreadable
      expected[at] = {};
      MESSAGE("damaged the header of " << s.path);
      continue;
    }
    uint64_t blocks = s.dataBytes / 4096;
    int n = 1 + int(rng() % 2);
    for (int j = 0; j < n; ++j) {
      uint64_t block = rng() % blocks;
      flipByte(s.path, kDataOffset + block * 4096 + rng() % 4096);
      expected[at].insert(block * 4096);
    }
    MESSAGE("damaged " << expected[at].size() << " blocks of " << s.path);
  }
  REQUIRE(int(expected.size()) == wanted);

  cluster.mount();
  checkFiles(files);  // read around the damage, before any scrub

  auto asked = run({adminBin(), "--meta", cluster.meta(), "scrub", "--now"}, 30'000);
  INFO(asked.output);
  REQUIRE(asked.exitCode == 0);
  CHECK(asked.output.find("asked 6 chunk servers") != std::string::npos);

  // Until every damaged shard is listed and every server finished its pass.
  auto passesDone = [&] {
    int done = 0;
    for (int i = 0; i < cluster.chunks(); ++i) {
      std::ifstream f(cluster.dir() + "/chunk" + std::to_string(i) + ".log");
      std::stringstream text;
      text << f.rdbuf();
      done += text.str().find("scrub pass done") != std::string::npos;
    }
    return done;
  };
  std::map<ShardAt, std::string> listed;
  std::string output;
  double start = nowSeconds();
  while (nowSeconds() - start < 90) {
    auto r = run({adminBin(), "--meta", cluster.meta(), "scrub"}, 30'000);
    output = r.output;
    listed = listedDamage(output);
    if (r.exitCode == 0 && listed.size() >= expected.size() && passesDone() == 6) break;
    usleep(200'000);
  }
  MESSAGE("tessera scrub says:\n" << output);
  CHECK(passesDone() == 6);
  REQUIRE(listed.size() == expected.size());
  for (auto& [at, blocks] : expected) {
    CAPTURE(std::get<0>(at));
    CAPTURE(std::get<1>(at));
    CAPTURE(std::get<2>(at));
    REQUIRE(listed.count(at) == 1);
    const std::string& column = listed[at];
    if (blocks.empty()) {
      CHECK(column.find("whole shard") != std::string::npos);
    } else {
      std::string want;
      for (uint64_t o : blocks) want += (want.empty() ? "" : ",") + std::to_string(o);
      CHECK(column == want);
    }
  }
  checkFiles(files);

  // tessera status shows the count.
  std::string status = cluster.status();
  INFO(status);
  CHECK(status.find(std::to_string(expected.size()) + " damaged shards") != std::string::npos);
  CHECK(status.find("scrub ") != std::string::npos);

  // Every file, from a fresh mount (no page cache), is still right.
  cluster.unmount();
  cluster.mount();
  checkFiles(files);
  CHECK(cluster.logProblems().empty());
}
