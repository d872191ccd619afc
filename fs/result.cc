#include "fs/result.h"

#include <cerrno>

#include "fs/proto/common.capnp.h"

namespace tessera {

#define TESSERA_SAME(ours, theirs) \
  static_assert(static_cast<uint16_t>(Errc::ours) == static_cast<uint16_t>(proto::Errc::theirs))
TESSERA_SAME(kOk, OK);
TESSERA_SAME(kNotFound, NOT_FOUND);
TESSERA_SAME(kExists, EXISTS);
TESSERA_SAME(kNotEmpty, NOT_EMPTY);
TESSERA_SAME(kNotDir, NOT_DIR);
TESSERA_SAME(kIsDir, IS_DIR);
TESSERA_SAME(kNameTooLong, NAME_TOO_LONG);
TESSERA_SAME(kInvalid, INVALID);
TESSERA_SAME(kAccess, ACCESS);
TESSERA_SAME(kNotPermitted, NOT_PERMITTED);
TESSERA_SAME(kNoSpace, NO_SPACE);
TESSERA_SAME(kIo, IO);
TESSERA_SAME(kCorruption, CORRUPTION);
TESSERA_SAME(kNoData, NO_DATA);
TESSERA_SAME(kRange, RANGE);
TESSERA_SAME(kTooManyLinks, TOO_MANY_LINKS);
TESSERA_SAME(kCrossDevice, CROSS_DEVICE);
TESSERA_SAME(kNotSupported, NOT_SUPPORTED);
TESSERA_SAME(kStale, STALE);
TESSERA_SAME(kUnavailable, UNAVAILABLE);
TESSERA_SAME(kTooBig, TOO_BIG);
TESSERA_SAME(kBusy, BUSY);
TESSERA_SAME(kTimedOut, TIMED_OUT);
TESSERA_SAME(kNotLeader, NOT_LEADER);
TESSERA_SAME(kWrongCluster, WRONG_CLUSTER);
TESSERA_SAME(kWouldBlock, WOULD_BLOCK);
TESSERA_SAME(kInterrupted, INTERRUPTED);
TESSERA_SAME(kReadOnly, READ_ONLY);
TESSERA_SAME(kLost, LOST);
#undef TESSERA_SAME

const char* errcName(Errc code) {
  switch (code) {
    case Errc::kOk: return "ok";
    case Errc::kNotFound: return "notFound";
    case Errc::kExists: return "exists";
    case Errc::kNotEmpty: return "notEmpty";
    case Errc::kNotDir: return "notDir";
    case Errc::kIsDir: return "isDir";
    case Errc::kNameTooLong: return "nameTooLong";
    case Errc::kInvalid: return "invalid";
    case Errc::kAccess: return "access";
    case Errc::kNotPermitted: return "notPermitted";
    case Errc::kNoSpace: return "noSpace";
    case Errc::kIo: return "io";
    case Errc::kCorruption: return "corruption";
    case Errc::kNoData: return "noData";
    case Errc::kRange: return "range";
    case Errc::kTooManyLinks: return "tooManyLinks";
    case Errc::kCrossDevice: return "crossDevice";
    case Errc::kNotSupported: return "notSupported";
    case Errc::kStale: return "stale";
    case Errc::kUnavailable: return "unavailable";
    case Errc::kTooBig: return "tooBig";
    case Errc::kBusy: return "busy";
    case Errc::kTimedOut: return "timedOut";
    case Errc::kNotLeader: return "notLeader";
    case Errc::kWrongCluster: return "wrongCluster";
    case Errc::kWouldBlock: return "wouldBlock";
    case Errc::kInterrupted: return "interrupted";
    case Errc::kReadOnly: return "readOnly";
    case Errc::kLost: return "lost";
  }
  return "unknown";
}

int toErrno(Errc code) {
  switch (code) {
    case Errc::kOk: return 0;
    case Errc::kNotFound: return ENOENT;
    case Errc::kExists: return EEXIST;
    case Errc::kNotEmpty: return ENOTEMPTY;
    case Errc::kNotDir: return ENOTDIR;
    case Errc::kIsDir: return EISDIR;
    case Errc::kNameTooLong: return ENAMETOOLONG;
    case Errc::kInvalid: return EINVAL;
    case Errc::kAccess: return EACCES;
    case Errc::kNotPermitted: return EPERM;
    case Errc::kNoSpace: return ENOSPC;
    case Errc::kNoData: return ENODATA;
    case Errc::kRange: return ERANGE;
    case Errc::kTooManyLinks: return EMLINK;
    case Errc::kCrossDevice: return EXDEV;
    case Errc::kNotSupported: return EOPNOTSUPP;
    case Errc::kStale: return ESTALE;
    case Errc::kTooBig: return EFBIG;
    case Errc::kBusy: return EBUSY;
    case Errc::kTimedOut: return ETIMEDOUT;
    case Errc::kWouldBlock: return EAGAIN;
    case Errc::kInterrupted: return EINTR;
    case Errc::kReadOnly: return EROFS;
    case Errc::kIo:
    case Errc::kCorruption:
    case Errc::kLost:
    case Errc::kUnavailable:
    case Errc::kNotLeader:
    case Errc::kWrongCluster:
      return EIO;
  }
  return EIO;
}

std::string Error::toString() const {
  std::string s = errcName(code);
  if (!detail.empty()) {
    s += ": ";
    s += detail;
  }
  return s;
}

}  // namespace tessera
