// meta/meta_service.h — the metadata server's RPC face (proto::MetaService). Mutations become
// proto::Op commands carrying the time and every new id, applied by the Namespace state machine
// (today directly; under Raft they will be proposed). Reads go to the Namespace. It also keeps
// the soft state that is not replicated: which chunk servers are up and how full they are, from
// their heartbeats, and the garbage deletions it has handed out.
// Not thread-safe: owned by the meta server's event loop.
#pragma once
#include <map>
#include <random>
#include <string>

#include <kj/async.h>
#include <kj/timer.h>

#include "fs/proto/meta.capnp.h"
#include "meta/ns/namespace.h"

namespace tessera::meta {

struct MetaConfig {
  std::string address;                    // ours, for status
  uint64_t serverTimeoutMs = 5000;        // a chunk server without heartbeat this long is down
  uint64_t seed = 0;                      // placement randomness
};

class MetaService final : public proto::MetaService::Server {
 public:
  // `ns` and `timer` must outlive the service. `ns` must be initialized.
  MetaService(Namespace& ns, kj::Timer& timer, const MetaConfig& config);

  // Runs the liveness sweep until the returned promise is dropped.
  kj::Promise<void> run();

 protected:
  kj::Promise<void> openSession(OpenSessionContext context) override;
  kj::Promise<void> lookup(LookupContext context) override;
  kj::Promise<void> getattr(GetattrContext context) override;
  kj::Promise<void> setattr(SetattrContext context) override;
  kj::Promise<void> mknod(MknodContext context) override;
  kj::Promise<void> link(LinkContext context) override;
  kj::Promise<void> unlink(UnlinkContext context) override;
  kj::Promise<void> rename(RenameContext context) override;
  kj::Promise<void> readlink(ReadlinkContext context) override;
  kj::Promise<void> readdir(ReaddirContext context) override;
  kj::Promise<void> open(OpenContext context) override;
  kj::Promise<void> release(ReleaseContext context) override;
  kj::Promise<void> statfs(StatfsContext context) override;
  kj::Promise<void> setxattr(SetxattrContext context) override;
  kj::Promise<void> getxattr(GetxattrContext context) override;
  kj::Promise<void> listxattr(ListxattrContext context) override;
  kj::Promise<void> removexattr(RemovexattrContext context) override;
  kj::Promise<void> fsync(FsyncContext context) override;
  kj::Promise<void> getChunks(GetChunksContext context) override;
  kj::Promise<void> allocChunk(AllocChunkContext context) override;
  kj::Promise<void> commitWrite(CommitWriteContext context) override;
  kj::Promise<void> servers(ServersContext context) override;
  kj::Promise<void> registerServer(RegisterServerContext context) override;
  kj::Promise<void> heartbeat(HeartbeatContext context) override;
  kj::Promise<void> status(StatusContext context) override;

 private:
  struct ServerState {
    ServerRecordOut record;
    bool up = false;
    kj::TimePoint lastHeartbeat = kj::origin<kj::TimePoint>();
    uint64_t capacityBytes = 0, usedBytes = 0, freeBytes = 0, shards = 0;
    uint64_t fsid = 0;  // servers on one host with one fsid share a disk
  };

  int64_t nowNs() const;
  void sweep();
  void fillServerInfo(const ServerState& s, proto::ServerInfo::Builder b);
  proto::StatFs::Builder fillStatFs(proto::StatFs::Builder b);

  Namespace& ns_;
  kj::Timer& timer_;
  MetaConfig config_;
  std::mt19937_64 rng_;
  IdMarks next_;  // last id handed out of each kind
  std::map<ServerId, ServerState> servers_;
  kj::TimePoint started_;
};

}  // namespace tessera::meta
