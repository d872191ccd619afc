// fs/log.h — one line per event on stderr (daemons point stderr at their log file):
//   2026-11-25T15:50:39.123Z I meta: registered chunk server 3 at 127.0.0.1:40211
// Thread-safe; each line is written with one write(2).
#pragma once
#include <kj/string.h>

namespace tessera::log {

enum class Level { kDebug, kInfo, kWarn, kError };

// Names the process in every line ("meta", "chunk3", "mount").
void setTag(kj::StringPtr tag);
void setMinLevel(Level level);
bool enabled(Level level);
void write(Level level, kj::StringPtr message);

// Formats nothing unless debug logging is on: debug lines sit on hot paths.
template <typename... Params>
void debug(Params&&... params) {
  if (enabled(Level::kDebug)) write(Level::kDebug, kj::str(kj::fwd<Params>(params)...));
}
template <typename... Params>
void info(Params&&... params) { write(Level::kInfo, kj::str(kj::fwd<Params>(params)...)); }
template <typename... Params>
void warn(Params&&... params) { write(Level::kWarn, kj::str(kj::fwd<Params>(params)...)); }
template <typename... Params>
void error(Params&&... params) { write(Level::kError, kj::str(kj::fwd<Params>(params)...)); }

}  // namespace tessera::log
