/* Files in the models folder that are models, but not rnnd's: an ONNX export, a PyTorch file,
 * a safetensors or NumPy file of weights, a training checkpoint. The registry loads only
 * *.rnnd files, so these would be skipped without a word; the daemon names them in its log at
 * start and on each reload, with the way to convert them. Names only: no such file is opened. */
#ifndef RNND_MODELS_OTHER_H
#define RNND_MODELS_OTHER_H

#include "log.h"

/* What NAME's extension (case-insensitive) says it is, "an ONNX model" for "net.onnx", or
 * NULL when it is none of .onnx, .pt, .pth, .ptl, .safetensors, .npz, .ckpt. */
const char *rnnd_models_other_kind(const char *name);

/* Log one warning line per such file of the folder DIR, in name order (hidden files left out,
 * as the registry leaves them): "event=models_not_rnnd dir=DIR file=NAME msg=...". At most
 * RNND_MODELS_OTHER_MAX lines, then one line counting the rest. Nothing when DIR is NULL,
 * empty or cannot be listed (loading the models reports that). */
#define RNND_MODELS_OTHER_MAX 32
void rnnd_models_other_log(const rnnd_log *log, const char *dir);

#endif
