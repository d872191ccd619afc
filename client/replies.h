// client/replies.h — the outcome of a meta service reply, as a value: its error, or the
// attributes it carries. For the client's meta calls (any generated Response type with
// getError(), and getAttr() for attrOf).
#pragma once
#include "fs/result.h"
#include "fs/types.h"
#include "fs/wire.h"

namespace tessera::client {

template <typename Response>
Result<Attr> attrOf(Response& r) {
  auto st = fromWire(r.getError());
  if (!st) return st.error();
  return fromWire(r.getAttr());
}

template <typename Response>
Status statusOf(Response& r) {
  return fromWire(r.getError());
}

}  // namespace tessera::client
