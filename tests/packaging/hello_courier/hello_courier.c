/* An extension written against the installed courier headers, as another
 * author would: it calls the runtime through the C API, streaming the reply. */
#include "postgres.h"

#include "courier/courier.h"
#include "courier/runtime.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"

PG_MODULE_MAGIC;
PG_FUNCTION_INFO_V1(hello_courier);

Datum
hello_courier(PG_FUNCTION_ARGS)
{
	const char *msg = "hello from another extension";
	CourierCall *call = courier_call_begin("echo", (int64_t) strlen(msg));
	char		buf[8];
	StringInfoData out;
	size_t		n;

	StaticAssertStmt(COURIER_RUNTIME_ABI_VERSION >= 1, "runtime ABI");
	courier_call_write(call, msg, strlen(msg));
	courier_call_end_request(call);
	initStringInfo(&out);
	while ((n = courier_call_read(call, buf, sizeof buf)) > 0)	/* small pieces on purpose */
		appendBinaryStringInfo(&out, buf, (int) n);
	courier_call_finish(call);
	PG_RETURN_TEXT_P(cstring_to_text_with_len(out.data, out.len));
}
