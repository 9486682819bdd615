/* utf8: the one UTF-8 validator (RFC 3629) and the JSON string writer that replaces what is not UTF-8. */
#ifndef OA_UTF8_H
#define OA_UTF8_H

#include <stddef.h>
#include <stdio.h>

/*
 * Length (1 to 4) of the well-formed UTF-8 sequence s starts with, or 0 when
 * it starts with none: a stray continuation byte, an overlong form, a
 * surrogate, a code point past U+10FFFF or a sequence cut short. s is a C
 * string: a NUL is never part of a sequence, so a sequence cut short by the
 * terminating NUL is 0 and nothing past it is read. A NUL itself is length 1.
 */
size_t utf8_len(const char *s);
/* Whether the C string s (up to its NUL) is well-formed UTF-8. */
int utf8_valid(const char *s);
/*
 * Write s to fp as a JSON string, quoted, with the escapes cJSON itself
 * writes. Each byte that does not begin a well-formed sequence becomes
 * \ufffd (U+FFFD), so what is written is always valid UTF-8 (SPEC §1). Uses
 * the unlocked stdio calls: the caller owns fp.
 */
void utf8_put_json_string(FILE *fp, const char *s);

#endif
