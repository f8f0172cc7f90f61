/*
 * The Waker conformance suite (tests/waker) on the latch waker, run where
 * the latch waker lives: in backends. One backend checks the single-party
 * contract on its own latch; two backends take turns through a table in
 * POSIX shared memory, each parking on its latch and woken by the other's
 * SetLatch, with no spinning.
 *
 * Interrupts are what a cancel's signal handler does: InterruptPending set,
 * then the latch. The check clears it again (no cancel flag was set, so
 * there is nothing for ProcessInterrupts to do).
 */
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

#include "courier/latch_waker.h"
#include "waker_conformance.h"
#include "courier/pg_guard.h"

extern "C" {
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(waker_conformance);
PG_FUNCTION_INFO_V1(waker_turns_create);
PG_FUNCTION_INFO_V1(waker_take_turns);
PG_FUNCTION_INFO_V1(waker_turns_drop);
}

namespace conf = courier::ipc::conformance;

namespace {

Datum text_datum(const std::string &s) {
    Datum d = 0;
    courier::pg::pg_call([&] { d = PointerGetDatum(cstring_to_text(s.c_str())); });
    return d;
}

/* The table named `name`, mapped; nullptr (with errno) when it cannot be. */
conf::TurnTable *map_table(const std::string &name, int flags) {
    const int fd = shm_open(name.c_str(), flags, 0600);
    if (fd < 0)
        return nullptr;
    if ((flags & O_CREAT) != 0 && ftruncate(fd, sizeof(conf::TurnTable)) != 0) {
        close(fd);
        return nullptr;
    }
    void *mem = mmap(nullptr, sizeof(conf::TurnTable), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    return mem == MAP_FAILED ? nullptr : static_cast<conf::TurnTable *>(mem);
}

}  // namespace

extern "C" Datum waker_conformance(PG_FUNCTION_ARGS) {
    return courier::pg::door([&]() -> Datum {
        courier::ext::LatchWaker waker;
        courier::ipc::Waiter self;
        courier::ipc::init_waiter(self);
        self.latch_proc.store(courier::ext::my_proc_number());
        conf::Interrupts interrupts{[] {
                                        InterruptPending = true;
                                        SetLatch(MyLatch);
                                    },
                                    [] { InterruptPending = false; }};
        std::string failures;
        for (const auto &f : conf::check_waker(waker, self, &interrupts))
            failures += f + "\n";
        return text_datum(failures);
    });
}

extern "C" Datum waker_turns_create(PG_FUNCTION_ARGS) {
    return courier::pg::door([&]() -> Datum {
        const std::string name = text_to_cstring(PG_GETARG_TEXT_PP(0));
        conf::TurnTable *table = map_table(name, O_CREAT | O_EXCL | O_RDWR);
        if (table == nullptr)
            throw std::runtime_error("cannot create " + name + ": " + strerror(errno));
        conf::init_turn_table(*table);
        munmap(table, sizeof *table);
        PG_RETURN_VOID();
    });
}

/* "ok, N parks" or what went wrong. */
extern "C" Datum waker_take_turns(PG_FUNCTION_ARGS) {
    const Datum result = courier::pg::door([&]() -> Datum {
        const std::string name = text_to_cstring(PG_GETARG_TEXT_PP(0));
        const int party = PG_GETARG_INT32(1);
        const int rounds = PG_GETARG_INT32(2);
        if (party != 0 && party != 1)
            throw std::invalid_argument("party is 0 or 1");
        conf::TurnTable *table = map_table(name, O_RDWR);
        if (table == nullptr)
            throw std::runtime_error("cannot open " + name + ": " + strerror(errno));
        table->waiter[party].latch_proc.store(courier::ext::my_proc_number());
        courier::ext::LatchWaker waker;
        const conf::TurnOutcome o = conf::take_turns(waker, *table, party, rounds);
        munmap(table, sizeof *table);
        return text_datum(o.failure.empty() ? "ok, " + std::to_string(o.parks) + " parks" : o.failure);
    });
    CHECK_FOR_INTERRUPTS();  // a cancel ends the turns as "interrupted"; it is served here, outside C++
    return result;
}

extern "C" Datum waker_turns_drop(PG_FUNCTION_ARGS) {
    shm_unlink(text_to_cstring(PG_GETARG_TEXT_PP(0)));
    PG_RETURN_VOID();
}
