#include "courier/ipc/status.h"

namespace courier::ipc {

const char *describe(Status status) {
    switch (status) {
    case Status::ok: return "ok";
    case Status::would_block: return "operation would block";
    case Status::timeout: return "timed out";
    case Status::interrupted: return "interrupted";
    case Status::too_large: return "message exceeds the maximum message size";
    case Status::corrupt: return "shared memory holds an out-of-range value";
    case Status::abandoned: return "the requester abandoned the call";
    case Status::server_restarted: return "the serving process restarted during the call";
    case Status::stopping: return "the serving process is shutting down";
    case Status::aborted: return "the sender gave up on the message";
    case Status::stale: return "stale handle or frame from an earlier generation";
    case Status::no_slot: return "no free slot";
    case Status::bad_argument: return "argument out of range";
    }
    return "unknown status";
}

}  // namespace courier::ipc
