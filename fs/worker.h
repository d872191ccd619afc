// fs/worker.h — a thread with its own KJ event loop for blocking work (fsync, disk I/O), reached
// from the owner's loop with run(): the function runs on the worker, its result comes back as a
// promise on the caller's loop (kj::Executor::executeAsync). Functions run one at a time, in
// the order they were given. Destroying the WorkerThread stops and joins the thread; work
// already started finishes first.
#pragma once
#include <kj/async.h>
#include <kj/mutex.h>
#include <kj/thread.h>

namespace tessera {

class WorkerThread {
 public:
  WorkerThread();
  ~WorkerThread() noexcept(false);
  KJ_DISALLOW_COPY(WorkerThread);

  // Runs `func` on the worker. Whatever `func` reads must stay alive until the promise
  // resolves (or is dropped: then it waits for a running `func` to finish).
  template <typename Func>
  auto run(Func&& func) {
    return executor_->executeAsync(kj::fwd<Func>(func));
  }

 private:
  void main();

  struct Published {
    kj::Own<const kj::Executor> executor;
    kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop;
  };
  kj::MutexGuarded<kj::Maybe<Published>> published_;
  kj::Own<const kj::Executor> executor_;
  kj::Own<kj::CrossThreadPromiseFulfiller<void>> stop_;
  kj::Thread thread_;  // last: starts in the constructor, joined first in the destructor
};

}  // namespace tessera
