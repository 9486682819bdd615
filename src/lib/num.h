/* num: range-checked number parsing for options and environment (no strtonum in glibc). */
#ifndef OA_NUM_H
#define OA_NUM_H

/* Parse a whole decimal number in [min, max]. Returns 0, or -1 with *why set. */
int parse_long(const char *s, long min, long max, long *out, const char **why);
/* Parse a non-negative number of seconds ("3", "0.25") up to max. */
int parse_seconds(const char *s, double max, double *out, const char **why);
/* For getopt: parse optarg or exit 64 naming the option. */
long option_long(const char *opt, const char *s, long min, long max);
double option_seconds(const char *opt, const char *s, double max);

#endif
