#include "fs/log.h"

#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <string>

namespace tessera::log {
namespace {

std::mutex gTagMutex;
std::string gTag = "tessera";
std::atomic<Level> gMinLevel{Level::kInfo};

std::string tag() {
  std::lock_guard<std::mutex> lock(gTagMutex);
  return gTag;
}

}  // namespace

void setTag(kj::StringPtr tag) {
  std::lock_guard<std::mutex> lock(gTagMutex);
  gTag = tag.cStr();
}
void setMinLevel(Level level) { gMinLevel = level; }

bool enabled(Level level) { return level >= gMinLevel.load(std::memory_order_relaxed); }

void write(Level level, kj::StringPtr message) {
  if (level < gMinLevel.load(std::memory_order_relaxed)) return;
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  tm t;
  gmtime_r(&ts.tv_sec, &t);
  char stamp[96];
  snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", t.tm_year + 1900,
           t.tm_mon + 1, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, ts.tv_nsec / 1'000'000);
  static const char kLetters[] = "DIWE";
  std::string name = tag();
  std::string line;
  line.reserve(message.size() + name.size() + 40);
  line += stamp;
  line += ' ';
  line += kLetters[int(level)];
  line += ' ';
  line += name;
  line += ": ";
  line.append(message.begin(), message.size());
  line += '\n';
  ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
  (void)n;
}

}  // namespace tessera::log
