#!/bin/sh
# Writes the overlay for a tenant's B″ / C″ from tenant 123's:
#   deploy/k8s/new-tenant.sh 456 && kubectl apply -k deploy/k8s/tenants/456
# Tenant ids are what the registry accepts: letters, digits, '-', '_'.
set -eu
tenant=${1:?usage: new-tenant.sh TENANT [OUT_DIR]}
case $tenant in
  *[!A-Za-z0-9_-]* | "") echo "new-tenant.sh: tenant id '$tenant' may hold only letters, digits, '-' and '_'" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
out=${2:-$here/tenants/$tenant}
if [ -e "$out/kustomization.yaml" ]; then
  echo "new-tenant.sh: $out/kustomization.yaml exists; not overwriting" >&2
  exit 1
fi
mkdir -p "$out"
# The overlay refers to ../../variant; from elsewhere, point at it directly.
variant=$(realpath --relative-to="$out" "$here/variant")
sed -e "s/sbx-123/sbx-$tenant/g" -e "s/tenant=123/tenant=$tenant/" \
    -e "s/waiter-bus\/tenant: \"123\"/waiter-bus\/tenant: \"$tenant\"/" \
    -e "s/Tenant 123/Tenant $tenant/" -e "s/tenants\/123/tenants\/$tenant/g" \
    -e "s#\.\./\.\./variant#$variant#" \
    "$here/tenants/123/kustomization.yaml" > "$out/kustomization.yaml"
echo "wrote $out/kustomization.yaml"
