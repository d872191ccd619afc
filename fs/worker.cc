#include "fs/worker.h"

namespace tessera {

WorkerThread::WorkerThread() : thread_([this] { main(); }) {
  published_.when([](const kj::Maybe<Published>& p) { return p != nullptr; },
                  [this](kj::Maybe<Published>& p) {
                    KJ_IF_MAYBE(published, p) {
                      executor_ = kj::mv(published->executor);
                      stop_ = kj::mv(published->stop);
                    }
                  });
}

WorkerThread::~WorkerThread() noexcept(false) {
  // thread_ is destroyed (joined) first of the members, after its loop was told to stop.
  stop_->fulfill();
}

void WorkerThread::main() {
  kj::EventLoop loop;
  kj::WaitScope waitScope(loop);
  auto stop = kj::newPromiseAndCrossThreadFulfiller<void>();
  *published_.lockExclusive() =
      Published{kj::getCurrentThreadExecutor().addRef(), kj::mv(stop.fulfiller)};
  stop.promise.wait(waitScope);
}

}  // namespace tessera
