/* Naming a file that is not an .rnnd model: an ONNX export, a TorchScript archive, a
 * torch.save checkpoint, a pickle, a NumPy .npz, a safetensors file of weights. */
#ifndef RNND_MODEL_SNIFF_H
#define RNND_MODEL_SNIFF_H

#include <stddef.h>

/* If DATA[0..LEN) is one of the formats above, fill ERR with one line
 * "PATH: file: <what it is>, not an .rnnd file; <how to convert it>" and return
 * RNND_ERR_FORMAT; otherwise return 0 and leave ERR alone. PATH is the file's name as the
 * user gave it (it goes into the suggested command). Meant for a file the loader has
 * already refused: the checks are strict, but a valid model must never reach them. */
int rnnd_model_sniff(const unsigned char *data, size_t len, const char *path, char *err,
                     size_t errlen);

#endif
