/* GET /v1/models and GET /v1/models/{model}. */
#include "api.h"

#include "rnnd/model.h"

/* The fields shared by the list and the detail. */
static void model_fields(rnnd_buf *b, const rnnd_entry *e)
{
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    rnnd_buf_puts(b, "\"name\":");
    rnnd_buf_json_string(b, e->name);
    rnnd_buf_printf(b, ",\"version\":%d,\"digest\":\"%s\",\"file_digest\":\"%s\"", e->version,
                    e->digest, e->file_digest);
    rnnd_buf_printf(b, ",\"input_kind\":\"%s\",\"input_dim\":%d",
                    spec->input_kind == RNND_INPUT_TOKENS ? "tokens" : "vectors", spec->input_dim);
    if (spec->input_kind == RNND_INPUT_TOKENS)
        rnnd_buf_printf(b, ",\"vocab_size\":%d", spec->vocab_size);
    else
        rnnd_buf_puts(b, ",\"vocab_size\":null");
    rnnd_buf_printf(b,
                    ",\"output_dim\":%d,\"stateful\":%s,\"state_floats\":%zu"
                    ",\"state_bytes\":%zu,\"params\":%zu,\"layers\":%d",
                    e->output_dim, e->stateful ? "true" : "false", e->state_floats,
                    e->state_floats * sizeof(float), rnnd_model_param_count(e->model),
                    spec->n_layers);
    rnnd_buf_printf(b, ",\"weights\":\"%s\",\"pool\":\"%s\"", rnnd_weights_name(spec->weights),
                    rnnd_pool_name(spec->pool));
}

void rnnd_api_models_list(rnnd_req *r)
{
    rnnd_app *app = rnnd_req_app(r);
    rnnd_registry set;
    if (rnnd_catalog_copy(&app->models, &set)) {
        rnnd_reply_error(r, RNND_E_OUT_OF_MEMORY, "out of memory");
        return;
    }
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{\"models\":[");
    for (size_t i = 0; i < set.n; i++) {
        rnnd_buf_puts(&b, i ? ",{" : "{");
        model_fields(&b, set.entries[i]);
        rnnd_buf_puts(&b, "}");
    }
    rnnd_buf_puts(&b, "]}");
    rnnd_registry_free(&set);
    rnnd_reply(r, 200, &b);
}

void rnnd_api_model_get(rnnd_req *r)
{
    const rnnd_entry *e = rnnd_api_model(r, rnnd_req_param(r, 0));
    if (!e)
        return;
    const rnnd_model_spec *spec = rnnd_model_get_spec(e->model);
    rnnd_buf b;
    rnnd_buf_init(&b);
    rnnd_buf_puts(&b, "{");
    model_fields(&b, e);
    rnnd_buf_puts(&b, ",\"layer_types\":[");
    for (int i = 0; i < spec->n_layers; i++) {
        if (i)
            rnnd_buf_puts(&b, ",");
        rnnd_buf_printf(&b, "{\"type\":\"%s\",\"direction\":\"%s\",\"hidden_size\":%d}",
                        rnnd_cell_name(spec->layers[i].cell),
                        rnnd_direction_name(spec->layers[i].direction), spec->layers[i].hidden);
    }
    rnnd_buf_puts(&b, "],\"tokenizer\":");
    if (spec->tokenizer[0])
        rnnd_buf_json_string(&b, spec->tokenizer);
    else
        rnnd_buf_puts(&b, "null");
    rnnd_buf_puts(&b, ",\"vocab\":");
    if (spec->n_vocab) {
        rnnd_buf_puts(&b, "[");
        for (int i = 0; i < spec->n_vocab; i++) {
            if (i)
                rnnd_buf_puts(&b, ",");
            rnnd_buf_json_string(&b, spec->vocab[i]);
        }
        rnnd_buf_puts(&b, "]");
    } else {
        rnnd_buf_puts(&b, "null");
    }
    /* the architecture JSON exactly as stored in the file (the loader validated it) */
    rnnd_buf_puts(&b, ",\"architecture\":");
    rnnd_buf_puts(&b, rnnd_model_architecture_json(e->model));
    rnnd_buf_puts(&b, "}");
    rnnd_reply(r, 200, &b);
}
