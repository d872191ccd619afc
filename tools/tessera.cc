// tessera: the admin command. See kUsage for the commands.
// Meta servers come from --meta, else $TESSERA_META, else `meta` in --config FILE: one address
// or the whole list; any one that answers names the others and the leader (tools/meta_cluster.h).
// `policy` and `snapshot` work through a mounted directory (the tessera.policy and
// tessera.readonly attributes): the mount already follows the meta leader, so they need no
// address. New files under DIR get the policy; existing chunks keep theirs.
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <kj/async-io.h>

#include "fs/options.h"
#include "fs/proto/meta.capnp.h"
#include "fs/rpc.h"
#include "fs/types.h"
#include "fs/wire.h"
#include "tools/cli_util.h"
#include "tools/clone_cmd.h"
#include "tools/meta_cluster.h"
#include "tools/repair_cmds.h"
#include "tools/scrub_cmd.h"
#include "tools/snapshot_cmd.h"

namespace po = boost::program_options;
using namespace tessera;
using tessera::tools::MemberInfo;
using tessera::tools::MetaCluster;
using tessera::tools::ServerView;
using tessera::tools::Survey;
using tessera::tools::fail;
using tessera::tools::human;

namespace {

constexpr const char* kUsage =
    "usage: tessera [--meta HOST:PORT[,HOST:PORT...]] [--timeout DURATION] COMMAND\n"
    "commands:\n"
    "  status                          meta servers (Raft members, leader, term, commit and\n"
    "                                  applied index, lag of each), chunk servers, capacity.\n"
    "                                  Exit 0 only if a meta server leads and a majority of the\n"
    "                                  members is active; without a leader within --timeout it\n"
    "                                  prints what each reachable server says and exits 1\n"
    "  meta add HOST:PORT [--id N] [--dir DIR]\n"
    "                                  make the meta server at HOST:PORT a member (id N, default\n"
    "                                  the highest member id + 1) and print the tessera-meta\n"
    "                                  command line that runs it. Start the new server first,\n"
    "                                  with --join (then add reads its id from it), or start it\n"
    "                                  after add with the printed line; add refuses a server that\n"
    "                                  is not running when the group would lose its majority\n"
    "                                  until it starts. One member at a time\n"
    "  meta remove HOST:PORT|ID        take a member out of the group (leadership moves away\n"
    "                                  first if it leads); then stop its tessera-meta\n"
    "  meta transfer-leader [ID]       hand leadership to member ID (default: any other) and\n"
    "                                  wait, up to --timeout, until it leads\n"
    "  fsck [--max N]                  chunks that are degraded, lost or misplaced, from the\n"
    "                                  meta leader; exit 0 all healthy, 1 degraded or\n"
    "                                  misplaced, 2 lost (chunks, or blocks\n"
    "                                  marked lost), 3 could not ask\n"
    "  drain ID [--stop] [--wait]      move every shard off chunk server ID (it keeps serving\n"
    "                                  reads meanwhile); --wait shows progress until done\n"
    "  remove ID                       forget chunk server ID; refused while it holds shards\n"
    "  rebalance [--dry-run] [--band PCT] [--wait]\n"
    "                                  move shards so that every live chunk server's disk\n"
    "                                  usage is within PCT points (default 10) of the mean,\n"
    "                                  placement rules kept; prints the planned moves (chunk,\n"
    "                                  shard, from -> to, bytes); --dry-run only prints them;\n"
    "                                  --wait shows progress until done. --stop drops the\n"
    "                                  moves not started yet\n"
    "  scrub [--now]                   scrub progress of every chunk server and the damaged\n"
    "                                  shards found; --now first asks every chunk server up\n"
    "                                  to start a pass now\n"
    "  chunks FILE                     chunk ids of FILE (on a mount) and the server of each\n"
    "                                  shard\n"
    "  clone SRC DST [--force]         instant copy-on-write copy of file SRC (on a mount):\n"
    "                                  the copies share their chunks until either is written\n"
    "  policy get DIR                  the storage policy new files under DIR get\n"
    "  policy set DIR POLICY           ec(k,m) or replica(n) for new files under DIR\n"
    "  snapshot DIR NAME               read-only copy of DIR's tree (but DIR/.snapshots) as\n"
    "                                  DIR/.snapshots/NAME: files share chunks copy-on-write,\n"
    "                                  every node is frozen (tessera.readonly). Copied file by\n"
    "                                  file: not one point in time across files\n"
    "  snapshot list DIR               names of DIR's snapshots\n"
    "  snapshot remove DIR NAME        unfreeze and delete snapshot NAME of DIR\n"
    "DIR is a directory on a Tessera mount.";

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

std::string num(uint64_t v) { return std::to_string(v); }

std::string seconds(uint64_t ms) {
  char buf[32];
  snprintf(buf, sizeof buf, "%.1fs", double(ms) / 1000);
  return buf;
}

// --- status ----------------------------------------------------------------------------------

// A member counts towards the majority if the leader heard from it lately and it answers us.
bool healthy(const MemberInfo& m, const Survey& s) {
  const ServerView* own = s.at(m.address);
  return m.active && own && own->reachable;
}

size_t activeMembers(const Survey& s) {
  const ServerView* l = s.leaderView();
  if (!l) return 0;
  return size_t(std::count_if(l->members.begin(), l->members.end(),
                              [&](const MemberInfo& m) { return healthy(m, s); }));
}

// One line per member: the leader's view (match, active) next to the member's own (role, term,
// applied). LAG is how far the member's state machine is behind the leader's commit.
void printMembers(const ServerView& leader, const Survey& s) {
  printf("  %-4s %-22s %-10s %6s %9s %9s %7s %-6s %s\n", "ID", "ADDRESS", "ROLE", "TERM", "MATCH",
         "APPLIED", "LAG", "ACTIVE", "UP");
  for (auto& m : leader.members) {
    const ServerView* own = s.at(m.address);
    bool up = own && own->reachable;
    std::string role = !up ? "down" : own->id != m.id ? "wrong-id" : own->role;
    std::string lag = up ? num(leader.commit > own->applied ? leader.commit - own->applied : 0)
                         : "-";
    printf("  %-4lu %-22s %-10s %6s %9lu %9s %7s %-6s %s\n", (unsigned long)m.id,
           m.address.c_str(), role.c_str(), up ? num(own->term).c_str() : "-",
           (unsigned long)m.match, up ? num(own->applied).c_str() : "-", lag.c_str(),
           m.active ? "yes" : "no", up && own->uptimeMs ? uptime(own->uptimeMs).c_str() : "-");
  }
  // Servers we were told about that are not members (a joiner not added yet, a removed one
  // still running).
  for (auto& v : s.views) {
    if (!v.reachable || leader.isMember(v.id) || v.address == leader.address) continue;
    bool listed = std::any_of(leader.members.begin(), leader.members.end(),
                              [&](const MemberInfo& m) { return m.address == v.address; });
    if (listed) continue;
    printf("  not a member: %s answers as id %lu, %s, term %lu, applied %lu\n",
           v.address.c_str(), (unsigned long)v.id, v.role.c_str(), (unsigned long)v.term,
           (unsigned long)v.applied);
  }
}

// Without a leader: every server's own word.
void printLeaderless(const Survey& s, uint64_t waitedMs) {
  printf("meta    no leader after %s; what each meta server says:\n", seconds(waitedMs).c_str());
  printf("  %-4s %-22s %-14s %6s %-7s %9s %9s %9s\n", "ID", "ADDRESS", "ROLE", "TERM", "LEADER",
         "COMMIT", "APPLIED", "LAST");
  for (auto& v : s.views) {
    if (!v.reachable) {
      printf("  %-4s %-22s down (%s)\n", "-", v.address.c_str(), v.error.toString().c_str());
      continue;
    }
    printf("  %-4lu %-22s %-14s %6lu %-7s %9lu %9lu %9lu\n", (unsigned long)v.id,
           v.address.c_str(), v.role.c_str(), (unsigned long)v.term,
           v.leader ? num(v.leader).c_str() : "-", (unsigned long)v.commit,
           (unsigned long)v.applied, (unsigned long)v.lastIndex);
  }
}

// The disks of a server with several, and any disk that is full or failed.
void printDisks(proto::ServerInfo::Reader s) {
  auto disks = s.getDisks();
  if (s.getNoNewShards()) printf("       takes no new shards: every disk failed or full\n");
  for (auto d : disks) {
    bool ok = d.getState() == proto::DiskState::OK;
    if (ok && disks.size() < 2) continue;
    const char* state = ok ? "ok" : d.getState() == proto::DiskState::FULL ? "FULL" : "FAILED";
    bool failed = d.getState() == proto::DiskState::FAILED;
    printf("       disk %-6s %-33s %10s %10s %10s %8lu%s%s\n", state, d.getPath().cStr(),
           failed ? "-" : human(d.getCapacityBytes()).c_str(),
           failed ? "-" : human(d.getUsedBytes()).c_str(),
           failed ? "-" : human(d.getFreeBytes()).c_str(), (unsigned long)d.getShards(),
           failed ? " lost" : "", ok ? "" : ("  " + std::string(d.getReason().cStr())).c_str());
  }
}

void printChunkServers(proto::MetaService::StatusResults::Reader r) {
  auto servers = r.getServers();
  size_t up = 0;
  for (auto s : servers) up += s.getUp();
  printf("\nchunk servers: %zu up, %zu down\n", up, servers.size() - up);
  printf("  %-4s %-22s %-5s %-28s %10s %10s %10s %8s  %s\n", "ID", "ADDRESS", "STATE",
         "SITE/RACK/HOST", "CAPACITY", "USED", "FREE", "SHARDS", "HEARTBEAT");
  for (auto s : servers) {
    auto label = [](capnp::Text::Reader t) { return t.size() ? std::string(t.cStr()) : "-"; };
    std::string where = label(s.getSite()) + "/" + label(s.getRack()) + "/" + label(s.getHost());
    printf("  %-4lu %-22s %-5s %-28s %10s %10s %10s %8lu  %s\n", (unsigned long)s.getId(),
           s.getAddress().cStr(), !s.getUp() ? "DOWN" : s.getDraining() ? "drain" : "up",
           where.c_str(),
           human(s.getCapacityBytes()).c_str(), human(s.getUsedBytes()).c_str(),
           human(s.getFreeBytes()).c_str(), (unsigned long)s.getShards(),
           age(s.getLastHeartbeatMs()).c_str());
    if (s.getLogRecords() > 0) {
      printf("       write log: %lu records, %s not yet in their stripes\n",
             (unsigned long)s.getLogRecords(), human(s.getLogBytes()).c_str());
    }
    printDisks(s);
  }
}

int status(MetaCluster& cluster) {
  Survey s = cluster.findLeader();
  // The leader forgets who is active at the start of each election timeout and relearns it
  // from the next heartbeat replies, a tick later: a survey in that instant sees no follower
  // active. Look again before calling the group unhealthy.
  for (int again = 0; again < 3 && s.leaderView() && !cluster.expired() &&
                      activeMembers(s) <= s.leaderView()->members.size() / 2;
       ++again) {
    cluster.sleepMs(300);
    Survey next = cluster.survey();
    if (next.leaderView()) s = kj::mv(next);
  }
  if (!s.anyReachable()) {
    std::string why = s.views.empty() ? "" : ": " + s.views.back().error.toString();
    return fail("cannot reach meta server at " + cluster.known() + why);
  }
  const ServerView* leader = s.leaderView();
  if (!leader) {
    printLeaderless(s, cluster.timeoutMs());
    fflush(stdout);
    return fail("no meta server leads (asked " + cluster.known() + " for " +
                seconds(cluster.timeoutMs()) + ")");
  }
  // The root's policy is a read: the leader answers it.
  auto policy = cluster.onLeader<std::string>("getxattr", [](proto::MetaService::Client c) {
    auto req = c.getxattrRequest();
    req.setInode(kRootInode.value);
    req.setName("tessera.policy");
    return req.send().then([](capnp::Response<proto::MetaService::GetxattrResults> r)
                               -> Result<std::string> {
      if (auto e = fromWire(r.getError()); !e) return e.error();
      auto v = r.getValue();
      return std::string(reinterpret_cast<const char*>(v.begin()), v.size());
    });
  });
  proto::MetaService::StatusResults::Reader r = *leader->reply;
  size_t active = activeMembers(s), members = leader->members.size();
  bool quorum = active > members / 2;
  printf("cluster %s\n", leader->clusterId.empty() ? "?" : leader->clusterId.c_str());
  printf("meta    leader %lu at %s, term %lu, commit %lu, applied %lu; %zu members, %zu active%s\n",
         (unsigned long)leader->id, leader->address.c_str(), (unsigned long)leader->term,
         (unsigned long)leader->commit, (unsigned long)leader->applied, members, active,
         quorum ? "" : " — NO MAJORITY");
  printMembers(*leader, s);
  printf("files   %lu inodes, %lu chunks; root policy %s\n", (unsigned long)r.getInodes(),
         (unsigned long)r.getChunks(), policy ? policy->c_str() : "?");
  auto stat = r.getStat();
  printf("space   %s usable, %s free\n", human(stat.getTotalBytes()).c_str(),
         human(stat.getFreeBytes()).c_str());
  tessera::tools::printRepair(r.getRepair());
  tessera::tools::printRebalance(r.getRebalance());
  printChunkServers(r);
  tools::printScrubSummary(r);
  fflush(stdout);
  if (!quorum) {
    return fail("only " + num(active) + " of " + num(members) + " meta members are active");
  }
  return 0;
}

// --- meta add | remove | transfer-leader ------------------------------------------------------

Result<uint64_t> parseId(const std::string& text) {
  if (text.empty() || text.size() > 19 ||
      !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return Error{Errc::kInvalid, "bad member id '" + text + "'"};
  }
  uint64_t id = std::stoull(text);
  if (id == 0) return Error{Errc::kInvalid, "member id 0 (ids start at 1)"};
  return id;
}

std::string memberList(const ServerView& leader) {
  std::string out;
  for (auto& m : leader.members) out += (out.empty() ? "" : ",") + num(m.id) + "=" + m.address;
  return out;
}

// The leader, or an Error saying why there is none.
Result<const ServerView*> requireLeader(MetaCluster& cluster, const Survey& s) {
  if (!s.anyReachable()) return Error{Errc::kUnavailable, "cannot reach meta server at " + cluster.known()};
  if (!s.leaderView()) {
    return Error{Errc::kUnavailable, "no meta server leads (asked " + cluster.known() + " for " +
                                         seconds(cluster.timeoutMs()) + ")"};
  }
  return s.leaderView();
}

// Runs an admin call whose reply is just `error` on the leader.
template <typename Req>
MetaCluster::Fn<bool> errorOnly(Req make) {
  return [make](proto::MetaService::Client c) {
    return make(c).send().then([](auto r) -> Result<bool> {
      if (auto e = fromWire(r.getError()); !e) return e.error();
      return true;
    });
  };
}

// Waits until a member other than `old` leads (`want` if not 0), asking the leader again every
// so often (a transfer the target could not finish in an election timeout is abandoned).
Result<const ServerView*> awaitLeader(MetaCluster& cluster, Survey& s, uint64_t old,
                                      uint64_t want) {
  uint64_t lastAsk = cluster.leftMs();
  while (true) {
    s = cluster.survey();
    const ServerView* l = s.leaderView();
    if (l && l->id != old && (!want || l->id == want)) return l;
    if (cluster.expired()) {
      std::string now = l ? "member " + num(l->id) + " leads" : "no member leads";
      return Error{Errc::kTimedOut, "leadership did not move within " +
                                        seconds(cluster.timeoutMs()) + " (" + now + ")"};
    }
    if (l && lastAsk > cluster.leftMs() + 1'500) {
      lastAsk = cluster.leftMs();
      auto r = cluster.onLeader<bool>("transferLeader", errorOnly([want](auto& c) {
        auto req = c.transferLeaderRequest();
        req.setId(want);
        return req;
      }));
      if (!r && r.code() != Errc::kBusy) return r.error();
    }
    cluster.sleepMs(MetaCluster::kPauseMs);
  }
}

int transferLeader(MetaCluster& cluster, const std::vector<std::string>& args) {
  if (args.size() > 1) return fail("usage: tessera meta transfer-leader [ID]");
  uint64_t want = 0;
  if (args.size() == 1) {
    auto id = parseId(args[0]);
    if (!id) return fail(id.error().detail);
    want = *id;
  }
  Survey s = cluster.findLeader();
  auto leader = requireLeader(cluster, s);
  if (!leader) return fail(leader.error().detail);
  uint64_t old = (*leader)->id;
  if (want && !(*leader)->isMember(want)) {
    return fail("no member " + num(want) + " (members: " + memberList(**leader) + ")");
  }
  if (want == old) {
    printf("member %lu at %s already leads (term %lu)\n", (unsigned long)old,
           (*leader)->address.c_str(), (unsigned long)(*leader)->term);
    return 0;
  }
  if ((*leader)->members.size() < 2) return fail("the group has one member: no one to lead instead");
  auto r = cluster.onLeader<bool>("transferLeader", errorOnly([want](auto& c) {
    auto req = c.transferLeaderRequest();
    req.setId(want);
    return req;
  }));
  if (!r && r.code() != Errc::kUnavailable && r.code() != Errc::kTimedOut) {
    return fail("transfer-leader refused: " + r.error().toString());
  }
  auto now = awaitLeader(cluster, s, old, want);
  if (!now) return fail(now.error().detail);
  printf("leader is now member %lu at %s (term %lu; was member %lu)\n", (unsigned long)(*now)->id,
         (*now)->address.c_str(), (unsigned long)(*now)->term, (unsigned long)old);
  return 0;
}

// Pulls "--NAME VALUE" or "--NAME=VALUE" out of a command's arguments.
Result<std::optional<std::string>> takeFlag(std::vector<std::string>& args, const std::string& name) {
  std::optional<std::string> value;
  for (size_t i = 0; i < args.size();) {
    if (args[i] == "--" + name) {
      if (i + 1 >= args.size()) return Error{Errc::kInvalid, "--" + name + " needs a value"};
      value = args[i + 1];
      args.erase(args.begin() + long(i), args.begin() + long(i) + 2);
    } else if (args[i].rfind("--" + name + "=", 0) == 0) {
      value = args[i].substr(name.size() + 3);
      args.erase(args.begin() + long(i));
    } else {
      ++i;
    }
  }
  return value;
}

int addMember(MetaCluster& cluster, std::vector<std::string> args) {
  auto idFlag = takeFlag(args, "id");
  if (!idFlag) return fail(idFlag.error().detail);
  auto dirFlag = takeFlag(args, "dir");
  if (!dirFlag) return fail(dirFlag.error().detail);
  if (args.size() != 1 || args[0].rfind("-", 0) == 0) {
    return fail("usage: tessera meta add HOST:PORT [--id N] [--dir DIR]");
  }
  auto parsed = Address::parse(args[0]);
  if (!parsed) return fail(parsed.error().detail);
  if (parsed->port == 0) return fail("meta add needs the port the new server listens on, not 0");
  std::string address = parsed->toString();
  uint64_t id = 0;
  if (*idFlag) {
    auto v = parseId(**idFlag);
    if (!v) return fail(v.error().detail);
    id = *v;
  }

  Survey s = cluster.findLeader();
  auto leaderOr = requireLeader(cluster, s);
  if (!leaderOr) return fail(leaderOr.error().detail);
  const ServerView& leader = **leaderOr;
  for (auto& m : leader.members) {
    if (m.address == address) return fail(address + " is already member " + num(m.id));
  }
  // Is the new server running already (started with --join)? Then it knows its id.
  ServerView joinerView = cluster.askOne(address);
  const ServerView* joiner = &joinerView;
  bool running = joiner->reachable;
  if (running) {
    if (!joiner->members.empty()) {
      return fail(address + " runs as member " + num(joiner->id) +
                  " of a group already; start it on an empty --dir with --join");
    }
    if (id && id != joiner->id) {
      return fail(address + " runs with --id " + num(joiner->id) + ", not " + num(id));
    }
    id = joiner->id;
  }
  if (!id) {
    for (auto& m : leader.members) id = std::max(id, m.id);
    ++id;
  }
  if (const MemberInfo* taken = leader.member(id)) {
    return fail("member id " + num(id) + " is taken by " + taken->address);
  }
  std::string peers = memberList(leader) + "," + num(id) + "=" + address;
  std::string command = "tessera-meta --id " + num(id) + " --join --peers " + peers +
                        " --listen " + address + " --dir " + (*dirFlag ? **dirFlag : "DIR");
  // A voter that is not running counts against the majority from the moment it is added.
  size_t voters = leader.members.size() + 1, majority = voters / 2 + 1;
  size_t active = activeMembers(s) + (running ? 1 : 0);
  if (active < majority) {
    return fail("adding member " + num(id) + " before it runs would leave " + num(active) +
                " of " + num(voters) + " members active, no majority; start it first: " + command);
  }

  auto r = cluster.onLeader<bool>("addMember", errorOnly([id, address](auto& c) {
    auto req = c.addMemberRequest();
    req.setId(id);
    req.setAddress(address);
    return req;
  }));
  if (!r) {
    // The call may have been applied before its connection failed: look.
    Survey after = cluster.findLeader();
    const ServerView* l = after.leaderView();
    const MemberInfo* m = l ? l->member(id) : nullptr;
    if (!m || m->address != address) return fail("meta add refused: " + r.error().toString());
  }
  printf("added member %lu at %s (%zu members)\n", (unsigned long)id, address.c_str(), voters);
  if (running) {
    printf("it is running and catches up from the leader\n");
  } else {
    printf("start it now, on an empty directory:\n  %s\n", command.c_str());
  }
  return 0;
}

int removeMember(MetaCluster& cluster, const std::vector<std::string>& args) {
  if (args.size() != 1) return fail("usage: tessera meta remove HOST:PORT|ID");
  Survey s = cluster.findLeader();
  auto leaderOr = requireLeader(cluster, s);
  if (!leaderOr) return fail(leaderOr.error().detail);
  const ServerView* leader = *leaderOr;
  const MemberInfo* target = nullptr;
  if (auto id = parseId(args[0])) {
    target = leader->member(*id);
  } else {
    auto a = Address::parse(args[0]);
    if (!a) return fail("'" + args[0] + "' is neither a member id nor HOST:PORT");
    for (auto& m : leader->members) {
      if (m.address == a->toString()) target = &m;
    }
  }
  if (!target) return fail("no member " + args[0] + " (members: " + memberList(*leader) + ")");
  if (leader->members.size() == 1) return fail("cannot remove the last member of the group");
  uint64_t id = target->id;
  std::string address = target->address;
  size_t left = leader->members.size() - 1;
  if (id == leader->id) {
    // A leader that removes itself leads until the change commits, then the others elect one
    // after an election timeout. Handing over first keeps the pause short.
    auto r = cluster.onLeader<bool>("transferLeader", errorOnly([](auto& c) {
      auto req = c.transferLeaderRequest();
      req.setId(0);
      return req;
    }));
    if (!r && r.code() != Errc::kUnavailable && r.code() != Errc::kTimedOut) {
      return fail("moving leadership off member " + num(id) + ": " + r.error().toString());
    }
    auto now = awaitLeader(cluster, s, id, 0);
    if (!now) return fail("moving leadership off member " + num(id) + ": " + now.error().detail);
  }
  auto r = cluster.onLeader<bool>("removeMember", errorOnly([id](auto& c) {
    auto req = c.removeMemberRequest();
    req.setId(id);
    return req;
  }));
  if (!r) {
    Survey after = cluster.findLeader();
    const ServerView* l = after.leaderView();
    if (!l || l->isMember(id)) return fail("meta remove refused: " + r.error().toString());
  }
  printf("removed member %lu at %s (%zu members)\n", (unsigned long)id, address.c_str(), left);
  printf("stop its tessera-meta now; to bring it back, start it on an empty directory with "
         "--join and run tessera meta add\n");
  return 0;
}

int meta(MetaCluster& cluster, std::vector<std::string> args) {
  if (args.empty()) return fail("usage: tessera meta add|remove|transfer-leader ...");
  std::string sub = args[0];
  args.erase(args.begin());
  if (sub == "add") return addMember(cluster, args);
  if (sub == "remove") return removeMember(cluster, args);
  if (sub == "transfer-leader") return transferLeader(cluster, args);
  return fail("unknown meta command '" + sub + "' (add, remove, transfer-leader)");
}

// --- policy ----------------------------------------------------------------------------------

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
      ("meta", po::value<std::string>(),
       "HOST:PORT[,HOST:PORT...] of meta servers (or $TESSERA_META); one is enough")
      ("timeout", po::value<std::string>()->default_value("5s"), "give up after this long")
      ("command", po::value<std::vector<std::string>>(), "command and its arguments");
  std::vector<const char*> args{argv[0]};
  bool inCommand = false, metaFlag = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (!inCommand && a.rfind("-", 0) != 0) inCommand = true;
    if (!inCommand && (a == "--meta" || a.rfind("--meta=", 0) == 0)) metaFlag = true;
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
  if (cmd[0] == "clone") return tools::cloneCommand({cmd.begin() + 1, cmd.end()});
  if (cmd[0] == "policy") {
    if (cmd.size() == 3 && cmd[1] == "get") return policyGet(cmd[2]);
    if (cmd.size() == 4 && cmd[1] == "set") return policySet(cmd[2], cmd[3]);
    return fail("usage: tessera policy get DIR | tessera policy set DIR POLICY");
  }
  if (cmd[0] == "snapshot") return tools::snapshotCommand({cmd.begin() + 1, cmd.end()});
  if (cmd[0] != "status" && cmd[0] != "meta" && cmd[0] != "fsck" && cmd[0] != "drain" &&
      cmd[0] != "remove" && cmd[0] != "scrub" && cmd[0] != "chunks" && cmd[0] != "rebalance") {
    return fail("unknown command '" + cmd[0] + "' (try --help)");
  }
  if (cmd[0] == "status" && cmd.size() != 1) return fail("status takes no arguments");
  // --meta on the command line, else $TESSERA_META, else `meta` from --config.
  std::string list;
  const char* env = getenv("TESSERA_META");
  if (vm.count("meta") && (metaFlag || !env || !*env)) list = vm["meta"].as<std::string>();
  else if (env && *env) list = env;
  else return fail("no meta server: pass --meta HOST:PORT[,HOST:PORT...] or set TESSERA_META");
  auto addresses = parseAddressList(list);
  if (!addresses) return fail(addresses.error().detail);

  auto io = kj::setupAsyncIo();
  MetaCluster cluster(io, *addresses, *timeout);
  if (cmd[0] == "status") return status(cluster);
  if (cmd[0] == "drain") {
    return tessera::tools::drain(cluster, std::vector<std::string>(cmd.begin() + 1, cmd.end()));
  }
  if (cmd[0] == "remove") {
    return tessera::tools::removeServer(cluster,
                                        std::vector<std::string>(cmd.begin() + 1, cmd.end()));
  }
  if (cmd[0] == "fsck") {
    return tessera::tools::fsck(cluster, std::vector<std::string>(cmd.begin() + 1, cmd.end()));
  }
  if (cmd[0] == "rebalance") return tools::rebalance(cluster, {cmd.begin() + 1, cmd.end()});
  if (cmd[0] == "scrub") return tools::scrubCommand(cluster, {cmd.begin() + 1, cmd.end()});
  if (cmd[0] == "chunks") return tools::chunksCommand(cluster, {cmd.begin() + 1, cmd.end()});
  return meta(cluster, std::vector<std::string>(cmd.begin() + 1, cmd.end()));
}
