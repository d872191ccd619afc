// init, openSession, registerServer: the records that describe the cluster rather than files.
#include "fs/options.h"
#include "fs/wire.h"
#include "meta/ns/ops/ops.h"

namespace tessera::meta::ops {

Result<Applied> init(Txn& txn, proto::Op::Reader op) {
  auto args = op.getInit();
  auto done = txn.get(keys::counter(keys::kInitialized));
  if (!done) return done.error();
  if (*done) return err(Errc::kExists, "init: store already initialized");
  if (args.getClusterId().size() == 0) return err(Errc::kInvalid, "init: empty cluster id");
  // A proposer that leaves the policy out gets the default, ec(4,2).
  Layout policy;
  if (args.hasRootPolicy()) {
    auto parsed = fromWire(args.getRootPolicy());
    if (!parsed) return err(Errc::kInvalid, "init:", parsed.error().detail);
    policy = *parsed;
  }

  int64_t now = op.getNowNs();
  Inode root;
  root.attr.inode = kRootInode;
  root.attr.mode = S_IFDIR | 0755;
  root.attr.nlink = 2;
  root.attr.size = kDirSize;
  root.attr.atimeNs = root.attr.mtimeNs = root.attr.ctimeNs = now;
  root.policy = policy;
  root.nextCookie = kFirstCookie;
  root.parent = kRootInode;  // ".." of the root is the root
  txn.createInode(std::move(root));

  txn.put(keys::counter(keys::kClusterId), toStd(args.getClusterId()));
  txn.put(keys::counter(keys::kInitialized), "");
  if (Status s = txn.raiseMark(keys::kInodeMark, kRootInode.value); !s) return s.error();
  if (Status s = txn.addToCounter(keys::kInodeCount, 1); !s) return s.error();
  return Applied{};
}

Result<Applied> openSession(Txn& txn, proto::Op::Reader op) {
  auto args = op.getOpenSession();
  SessionId id(args.getSession());
  if (!id) return err(Errc::kInvalid, "openSession: session 0");
  // Opening a session again (a retried proposal) just refreshes its record.
  SessionRec rec{id, toStd(args.getHost()), toStd(args.getMountpoint()), op.getNowNs()};
  rec.lastActiveNs = op.getNowNs();
  txn.put(keys::session(id), encode(rec));
  if (Status s = txn.raiseMark(keys::kSessionMark, id.value); !s) return s.error();
  return Applied{};
}

namespace {

// The server whose record carries `token`, if any. A scan of the server records: there are few,
// and registrations are rare.
Result<std::optional<ServerRecordOut>> serverWithToken(Txn& txn, const std::string& token) {
  std::optional<ServerRecordOut> found;
  Status bad;
  Status s = txn.scan(keys::servers(), {}, [&](std::string_view key, std::string_view value) {
    if (key.size() != keys::kIdPrefixLen) return true;
    auto rec = decodeServer(ServerId(keys::readU64(key, 1)), value);
    if (!rec) {
      bad = rec.error();
      return false;
    }
    if (rec->token == token) found = std::move(*rec);
    return !found;
  });
  if (!s) return s.error();
  if (!bad) return bad.error();
  return found;
}

}  // namespace

Result<Applied> registerServer(Txn& txn, proto::Op::Reader op) {
  auto args = op.getRegisterServer();
  auto r = args.getServer();
  ServerRecordOut server{ServerId(r.getId()), toStd(r.getAddress()), toStd(r.getSite()),
                         toStd(r.getRack()),  toStd(r.getHost()),    false,
                         toStd(r.getToken())};
  if (!server.id) return err(Errc::kInvalid, "registerServer: server 0");
  if (server.address.empty()) return err(Errc::kInvalid, "registerServer: empty address");
  // The proposed id is used up either way, so no later proposer hands it out.
  if (Status s = txn.raiseMark(keys::kServerMark, server.id.value); !s) return s.error();
  if (!server.token.empty()) {
    if (Status s = checkServerToken(server.token); !s) {
      return err(Errc::kInvalid, "registerServer:", s.error().detail);
    }
    auto owner = serverWithToken(txn, server.token);
    if (!owner) return owner.error();
    if (*owner && (*owner)->id != server.id) {
      // A first registration tried again (its first try was applied, but its answer was lost or
      // came from a leader that lost its leadership): the server keeps the id it got then.
      if (!args.getNewId()) {
        return err(Errc::kExists, "registerServer: server " + std::to_string(server.id.value) +
                                      " has the identity token of server " +
                                      std::to_string((*owner)->id.value));
      }
      server.id = (*owner)->id;
    }
  }
  // A server that restarts may come back on another address or with new labels: overwrite,
  // keeping a drain under way.
  auto old = txn.get(keys::server(server.id));
  if (!old) return old.error();
  if (*old) {
    auto prev = decodeServer(server.id, **old);
    if (prev) {
      server.draining = prev->draining;
      // Two data directories claim this id (one copied server.id without server.token, say):
      // the one the cluster knows keeps it.
      if (!prev->token.empty() && prev->token != server.token) {
        if (server.token.empty()) {
          server.token = prev->token;  // an old chunk server that sends none
        } else {
          return err(Errc::kExists, "registerServer: server " + std::to_string(server.id.value) +
                                        " belongs to another data directory (its identity token"
                                        " differs)");
        }
      }
    }
  }
  txn.put(keys::server(server.id), encode(server));
  Applied applied;
  applied.server = server.id;
  return applied;
}

Result<Applied> setMember(Txn& txn, proto::Op::Reader op) {
  auto args = op.getSetMember();
  uint64_t id = args.getMember();
  if (id == 0) return err(Errc::kInvalid, "setMember: member 0");
  if (args.getRemove()) {
    txn.erase(keys::member(id));
    return Applied{};
  }
  std::string address = toStd(args.getAddress());
  if (!Address::parse(address)) return err(Errc::kInvalid, "setMember: bad address", address);
  txn.put(keys::member(id), address);
  return Applied{};
}

}  // namespace tessera::meta::ops
