/* config: where the services are, from the environment (SPEC §2). */
#ifndef OA_CONFIG_H
#define OA_CONFIG_H

/* RABBITMQ_URL, default amqp://localhost */
const char *config_amqp_url(void);
/* VENDOR_BASE_URL or NULL */
const char *config_vendor_base(void);
/* A description of the database target without secrets, for messages. */
const char *config_db_target(void);
/* A URL with any password replaced by "***", for messages; caller frees (never NULL). */
char *config_redact_url(const char *url);

#endif
