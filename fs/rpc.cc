#include "fs/rpc.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace tessera {

kj::Promise<Result<kj::Own<Connection>>> Connection::open(kj::Network& network, kj::Timer& timer,
                                                          const Address& address,
                                                          uint64_t timeoutMs) {
  std::string where = address.toString();
  auto connecting = network.parseAddress(where, address.port)
                        .then([](kj::Own<kj::NetworkAddress> addr) {
                          return addr->connect().attach(kj::mv(addr));
                        })
                        .then([](kj::Own<kj::AsyncIoStream> stream) {
                          return kj::heap<Connection>(kj::mv(stream));
                        });
  return withTimeout(timer, timeoutMs, kj::mv(connecting))
      .then([](kj::Own<Connection> c) -> Result<kj::Own<Connection>> { return kj::mv(c); },
            [where](kj::Exception&& e) -> Result<kj::Own<Connection>> {
              auto err = errorFromException(e, kj::str("connect to ", where.c_str()));
              if (err.code != Errc::kTimedOut) err.code = Errc::kUnavailable;
              return err;
            });
}

Connection::Connection(kj::Own<kj::AsyncIoStream> stream)
    : stream_(kj::mv(stream)), client_(*stream_) {}

Error errorFromException(const kj::Exception& e, kj::StringPtr what) {
  std::string desc = e.getDescription().cStr();
  // Keep messages one line: KJ descriptions of nested failures can span several.
  for (char& c : desc) {
    if (c == '\n') c = ' ';
  }
  if (desc.size() > 300) desc.resize(300);
  Errc code = Errc::kIo;
  if (desc.find("timed out") != std::string::npos) {
    code = Errc::kTimedOut;
  } else if (e.getType() == kj::Exception::Type::DISCONNECTED) {
    code = Errc::kUnavailable;
  } else if (e.getType() == kj::Exception::Type::OVERLOADED) {
    code = Errc::kBusy;
  }
  return Error{code, std::string(what.cStr()) + ": " + desc};
}

Result<kj::Own<RpcServer>> RpcServer::listen(kj::Network& network, kj::WaitScope& waitScope,
                                             const Address& address,
                                             capnp::Capability::Client bootstrap) {
  kj::Own<kj::ConnectionReceiver> receiver;
  KJ_IF_MAYBE(e, kj::runCatchingExceptions([&] {
                auto addr = network.parseAddress(address.toString(), address.port).wait(waitScope);
                receiver = addr->listen();
              })) {
    return Error{Errc::kUnavailable, "cannot listen on " + address.toString() + ": " +
                                         std::string(e->getDescription().cStr())};
  }
  return kj::heap<RpcServer>(kj::mv(receiver), kj::mv(bootstrap));
}

RpcServer::RpcServer(kj::Own<kj::ConnectionReceiver> receiver, capnp::Capability::Client bootstrap)
    : receiver_(kj::mv(receiver)),
      server_(kj::mv(bootstrap)),
      port_(uint16_t(receiver_->getPort())),
      listening_(server_.listen(*receiver_).eagerlyEvaluate(nullptr)) {}

Status writeFileAtomic(const std::string& path, const std::string& text) {
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error{Errc::kIo, "cannot write " + tmp + ": " + strerror(errno)};
  bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
  ::close(fd);
  if (!ok || ::rename(tmp.c_str(), path.c_str()) != 0) {
    return Error{Errc::kIo, "cannot write " + path + ": " + strerror(errno)};
  }
  // The rename is durable only once the directory is.
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  int dirFd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dirFd < 0 || ::fsync(dirFd) != 0) {
    int e = errno;
    if (dirFd >= 0) ::close(dirFd);
    return Error{Errc::kIo, "cannot sync directory " + dir + ": " + strerror(e)};
  }
  ::close(dirFd);
  return Status();
}

Result<std::string> readFile(const std::string& path) {
  std::ifstream f(path);
  if (!f) return Error{Errc::kNotFound, "cannot read " + path};
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

}  // namespace tessera
