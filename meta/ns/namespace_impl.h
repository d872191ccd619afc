// meta/ns/namespace_impl.h — the private state of a Namespace, shared by namespace.cc (the store
// and its ops) and snapshot.cc (Raft snapshots: export, staging, install). Internal to meta/ns.
#pragma once
#include <memory>
#include <string>

#include <leveldb/db.h>
#include <leveldb/env.h>
#include <leveldb/filter_policy.h>

#include "meta/ns/namespace.h"

namespace tessera::meta {

struct Namespace::Impl {
  // Declared first so it is destroyed last: the DB uses it until it closes.
  std::unique_ptr<const leveldb::FilterPolicy> filter;
  std::unique_ptr<leveldb::DB> db;
  std::string path;
  bool onDisk = false;  // the default Env: files are real, sync() must fsync them
  leveldb::Env* env = nullptr;  // nullptr: leveldb::Env::Default()
};

// Before the store at `path` opens: finishes or rolls back a snapshot install that a crash
// interrupted (see snapshot.h, "Installing"). kIo if the directories cannot be fixed.
Status recoverSnapshotInstall(const std::string& path, leveldb::Env* env);

}  // namespace tessera::meta
