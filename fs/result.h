// fs/result.h — errors as values. Result<T> holds a T or an Error; Status is Result<void>.
// Errc mirrors proto::Errc in fs/proto/common.capnp ordinal for ordinal (checked in result.cc),
// so a typed error crosses the wire intact. Faults (bugs, broken preconditions, disconnects)
// are kj::Exceptions instead; see ../shared/STYLE.md §4.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <variant>

#include <kj/debug.h>

namespace tessera {

enum class Errc : uint16_t {
  kOk = 0,
  kNotFound,
  kExists,
  kNotEmpty,
  kNotDir,
  kIsDir,
  kNameTooLong,
  kInvalid,
  kAccess,
  kNotPermitted,
  kNoSpace,
  kIo,
  kCorruption,
  kNoData,
  kRange,
  kTooManyLinks,
  kCrossDevice,
  kNotSupported,
  kStale,
  kUnavailable,
  kTooBig,
  kBusy,
  kTimedOut,
  kNotLeader,
  kWrongCluster,
  kWouldBlock,   // EAGAIN: a conflicting lock is held
  kInterrupted,  // EINTR
  kReadOnly,     // EROFS: a frozen inode (tessera.readonly)
  kLost,         // EIO: a block whose content is known nowhere (chunk/shard_file.h markLost)
};

// "notFound", "io", ...: the name used in messages and logs.
const char* errcName(Errc code);
// The errno a POSIX caller sees for `code` (EIO for the ones with no errno of their own).
int toErrno(Errc code);

struct Error {
  Errc code = Errc::kIo;
  std::string detail;
  // kNotLeader: where the leader is (HOST:PORT), if the one answering knows.
  std::string leaderHint;

  Error() = default;
  Error(Errc code, std::string detail, std::string leaderHint = {})
      : code(code), detail(std::move(detail)), leaderHint(std::move(leaderHint)) {}

  // "notFound: lookup foo"
  std::string toString() const;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::in_place_index<0>, std::move(value)) {}
  Result(Error error) : v_(std::in_place_index<1>, std::move(error)) {
    KJ_DASSERT(std::get<1>(v_).code != Errc::kOk);
  }

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(value()); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& value() & {
    KJ_REQUIRE(ok(), "value() of a failed Result", error().toString());
    return std::get<0>(v_);
  }
  const T& value() const& {
    KJ_REQUIRE(ok(), "value() of a failed Result", error().toString());
    return std::get<0>(v_);
  }
  T&& value() && {
    KJ_REQUIRE(ok(), "value() of a failed Result", error().toString());
    return std::move(std::get<0>(v_));
  }
  const Error& error() const {
    KJ_REQUIRE(!ok(), "error() of a successful Result");
    return std::get<1>(v_);
  }
  Errc code() const { return ok() ? Errc::kOk : error().code; }

 private:
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)) { KJ_DASSERT(error_->code != Errc::kOk); }

  bool ok() const { return !error_; }
  explicit operator bool() const { return ok(); }
  const Error& error() const {
    KJ_REQUIRE(!ok(), "error() of a successful Status");
    return *error_;
  }
  Errc code() const { return ok() ? Errc::kOk : error_->code; }

 private:
  std::optional<Error> error_;
};

using Status = Result<void>;

}  // namespace tessera
