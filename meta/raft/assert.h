// meta/raft/assert.h — fatal checks for bugs in the Raft core, or in storage that broke its
// contract (RaftStorage). Never for input from the network or from the node: those get an Error.
// A failed check throws RaftBug, which the node treats like any other fault (and the simulation
// reports with its seed).
#pragma once
#include <stdexcept>
#include <string>

namespace tessera::meta::raft {

class RaftBug : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

[[noreturn]] void raftBug(const char* file, int line, const char* condition,
                          const std::string& detail);

}  // namespace tessera::meta::raft

// `detail` is evaluated only when `condition` is false.
#define TESSERA_RAFT_ASSERT(condition, detail)                                  \
  do {                                                                          \
    if (!(condition)) {                                                         \
      ::tessera::meta::raft::raftBug(__FILE__, __LINE__, #condition, (detail)); \
    }                                                                           \
  } while (0)
