// fs/group_commit.h — batches of durable writes, one at a time, in order (group commit). A
// caller queues its bytes, then asks for flush(start): every flush asked while no batch waits
// to start joins a new batch; the batch starts once the one before it finished, and `start`
// then takes everything queued by then (so what comes while a batch runs shares the next).
// Every caller of one batch gets that batch's outcome.
// Not thread-safe: lives on one event loop.
#pragma once
#include <kj/async.h>
#include <kj/function.h>

#include "fs/result.h"

namespace tessera {

class GroupCommit {
 public:
  // `start` writes and syncs what is queued when it runs; it is called once per batch.
  template <typename Start>
  kj::Promise<Status> flush(Start&& start) {
    KJ_IF_MAYBE(next, next_) { return next->addBranch(); }
    kj::Promise<void> ready = kj::READY_NOW;
    KJ_IF_MAYBE(running, running_) { ready = running->addBranch(); }
    auto batch = ready
                     .then([this, start = kj::fwd<Start>(start)]() mutable {
                       next_ = nullptr;  // later callers form the next batch
                       return start();
                     })
                     .fork();
    running_ = batch.addBranch().ignoreResult().fork();
    auto result = batch.addBranch();
    next_ = kj::mv(batch);
    return result;
  }

 private:
  kj::Maybe<kj::ForkedPromise<Status>> next_;   // the batch not started yet
  kj::Maybe<kj::ForkedPromise<void>> running_;  // the last batch started
};

}  // namespace tessera
