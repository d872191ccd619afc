// tools/snapshot_cmd.h — `tessera snapshot`: read-only copies of a directory tree on a Tessera
// mount, kept under the directory itself as DIR/.snapshots/NAME:
//   tessera snapshot [create] DIR NAME   copies DIR's tree (all but DIR/.snapshots) into
//                                        DIR/.snapshots/NAME, then freezes every node of the copy
//   tessera snapshot list DIR            the names of DIR's snapshots, one a line
//   tessera snapshot remove DIR NAME     unfreezes snapshot NAME and deletes it
// Everything goes through the mount (POSIX calls and the virtual xattr tessera.readonly, see
// meta/ns/ops/xattr.cc), like `tessera policy`: no meta server address is needed. File contents
// are copied with copy_file_range, which the mount serves by sharing whole chunks
// (copy-on-write); where it cannot, by read and write. Holes stay holes.
//
// Not one point in time: the tree is copied file by file, so files changed during the copy may
// be in the snapshot as they were before or after the change, each independently.
#pragma once
#include <string>
#include <vector>

namespace tessera::tools {

// `args` are the words after `snapshot`. Returns the exit code: 0, or 1 with one line on stderr.
int snapshotCommand(const std::vector<std::string>& args);

}  // namespace tessera::tools
