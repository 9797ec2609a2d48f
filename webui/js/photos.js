// Photos taken on a phone, made fit for a poor connection before upload (the grid app's reports and
// checks, the squad app's "handled").

const MAX_EDGE = 2560; // photos are scaled down to this on the phone before upload ...
const KEEP_BELOW = 1.5 * 1024 * 1024; // ... unless they are already this small

/** The photo as a JPEG no larger than MAX_EDGE on its long side, or the file itself when that is smaller. */
export async function shrink(file) {
  // Phones take 4–8 MB pictures; a poor connection needs less. Keep small files as they are.
  if (file.size <= KEEP_BELOW || !window.createImageBitmap) return file;
  try {
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, MAX_EDGE / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
    return blob && blob.size < file.size ? new File([blob], file.name.replace(/\.\w+$/, "") + ".jpg", { type: "image/jpeg" }) : file;
  } catch {
    return file;
  }
}
